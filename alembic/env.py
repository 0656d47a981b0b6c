"""Async Alembic environment for the registry.

The URL comes from (first found): ``config.attributes["url"]`` (set by `registry.db.upgrade_to_head`),
``alembic -x url=...``, ``STYLECODES_DATABASE_URL``, else the default SQLite file under
``STYLECODES_DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import logging.config

from sqlalchemy.engine import Connection

from alembic import context
from registry.config import database_url_from_env
from registry.db import create_engine
from registry.models import Base, include_object

config = context.config
if config.config_file_name is not None and not config.attributes.get("url"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url") or database_url_from_env()
    )


# `include_object` skips the FTS tables, their shadow tables and the GIN index: the initial migration
# writes them by hand (registry.models.DIALECT_SPECIFIC_OBJECTS); the drift tests share the same hook.


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        include_object=include_object,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
