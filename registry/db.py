"""Engines, sessions and migrations. One `AsyncSession` per task (command, job), never shared."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALEMBIC_DIR = PROJECT_ROOT / "alembic"
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"

SQLITE_BUSY_TIMEOUT_MS = 5000  # writers queue behind each other instead of failing with "database is locked"
SQLITE_CACHE_KIB = 32 * 1024  # per connection; the default 2 MB thrashes on a 1M-style registry
SQLITE_MMAP_BYTES = 1 << 30
# Search settings for every PostgreSQL connection (sent at connect, no extra round trip). pgvector: the
# HNSW scan keeps reading the graph, in exact distance order, until enough rows pass `similar`'s
# visibility filter, and looks at 100 candidates per step (default 40) for better recall
# (registry/similar.py). pg_trgm: "did you mean" suggests names at least half similar by trigrams (default
# 0.3); weaker matches are poor suggestions, and on a large registry the GIN index hands back ~5x fewer
# candidates to check (docs/benchmarks.md).
POSTGRES_SERVER_SETTINGS = {
    "hnsw.iterative_scan": "strict_order",
    "hnsw.ef_search": "100",
    "pg_trgm.similarity_threshold": "0.5",
}


def create_engine(url: str, **kwargs) -> AsyncEngine:
    """An async engine. SQLite gets WAL (readers never block the writer), foreign keys and a busy timeout;
    PostgreSQL gets the pgvector search settings (`POSTGRES_SERVER_SETTINGS`)."""
    if url.startswith("sqlite"):
        # Sessions and connections always end their own transaction before giving the connection back,
        # so the pool's extra reset (one more thread hop per checkout with aiosqlite) is skipped.
        kwargs.setdefault("pool_reset_on_return", None)
    elif url.startswith("postgresql+asyncpg"):
        connect_args = dict(kwargs.get("connect_args") or {})
        connect_args["server_settings"] = {**POSTGRES_SERVER_SETTINGS, **connect_args.get("server_settings", {})}
        kwargs["connect_args"] = connect_args
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection, _connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across app crashes, fsync only at checkpoints
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")  # reads straight from the page cache, no copies
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects returned by repository functions stay readable after their commit.
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str):
    """An Alembic config for `url` that works from any working directory."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["url"] = url
    return config


async def upgrade_to_head(url: str) -> None:
    """``alembic upgrade head`` for `url`; the application calls this at start."""
    from alembic import command

    # env.py runs its own event loop, so Alembic goes to a worker thread.
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
