"""The deploy tests use the bot tests' Redis client, migrated SQLite registry and demo engine."""

from tests.bot.conftest import (  # noqa: F401  (fixtures)
    demo_engine,
    migrated_sqlite_template,
    redis_client,
    redis_prefix,
    registry_url,
)
