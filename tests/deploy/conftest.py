"""The deploy tests use the bot tests' real redis-server, migrated SQLite registry and demo engine."""

from tests.bot.conftest import (  # noqa: F401  (fixtures)
    demo_engine,
    migrated_sqlite_template,
    redis_client,
    redis_prefix,
    redis_server,
    registry_url,
)
