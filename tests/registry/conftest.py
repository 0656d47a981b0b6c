"""Registry fixtures: a migrated database per test, on SQLite and on a real, throwaway PostgreSQL.

The PostgreSQL server is started once per test session (initdb + pg_ctl on a free loopback port, as
the `postgres` user when running as root) and stopped at the end. Each test gets a fresh database
copied from a template that was migrated once, so tests are isolated and fast (~20 ms per copy).
Without the server binaries (Debian's `postgresql` package) the PostgreSQL cases are skipped with
that reason; CI installs the package, so there they run.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alembic import command
from registry.db import alembic_config, create_engine, create_session_factory

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass
class PostgresServer:
    host: str
    port: int
    data_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"


def _pg_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args  # PostgreSQL only refuses to run as root; any other user may own the server
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="registry-pg-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(data_dir, "postgres", "postgres")
    port = _free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    start = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(data_dir / "log"), "-w", "start"]
    subprocess.run(_as_postgres(start), check=True, capture_output=True)
    try:
        yield PostgresServer("127.0.0.1", port, data_dir)
    finally:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_postgres(stop), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


async def _admin(server: PostgresServer, *statements: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(host=server.host, port=server.port, user="postgres", database="postgres")
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database migrated to head once; each test copies it."""
    asyncio.run(_admin(postgres_server, "CREATE DATABASE registry_template"))
    command.upgrade(alembic_config(postgres_server.url("registry_template")), "head")
    return "registry_template"


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
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
    yield server.url(name)
    asyncio.run(_admin(server, f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
def another_fresh_database_url(
    request: pytest.FixtureRequest, fresh_database_url: str, tmp_path: Path
) -> Iterator[str]:
    """A second empty database on the same backend as `fresh_database_url` (to compare two schemas)."""
    if fresh_database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'another.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"another_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
    yield server.url(name)
    asyncio.run(_admin(server, f"DROP DATABASE {name} WITH (FORCE)"))


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
    name = f"test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name} TEMPLATE {template}"))
    yield server.url(name)
    asyncio.run(_admin(server, f"DROP DATABASE {name} WITH (FORCE)"))


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
    for name in ("database_url", "fresh_database_url"):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, BACKENDS, indirect=True)
