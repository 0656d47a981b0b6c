"""Shared bot fixtures: a migrated SQLite registry per test, the demo engine, and a real redis-server.

The redis-server is started by the tests (once per session, on a free loopback port, no persistence) and
stopped at the end; without the binary (Debian's `redis-server` package) the Redis tests are skipped with
that reason. CI installs it, so there they run. Each test gets its own Redis key prefix.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alembic import command
from registry.db import alembic_config, create_engine, create_session_factory

DEMO_VERSION = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@dataclass
class RedisServer:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH; apt-get install redis-server (CI installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port} (exit code {process.poll()})")
            time.sleep(0.05)
        yield RedisServer(port)
    finally:
        process.terminate()
        process.wait(timeout=10)


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
