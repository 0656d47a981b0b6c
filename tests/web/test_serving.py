"""How the gallery runs: `python -m web` on its own, per-IP rate limits, and what it never imports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import registry
from tests.conftest import PROJECT_ROOT
from web import start_web_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_web(database_url: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECODES_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), STYLECODES_DATABASE_URL=database_url)
    return subprocess.Popen([sys.executable, "-m", "web", *args], cwd=PROJECT_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def test_python_m_web_serves_the_registry_the_bot_uses(gallery, tmp_path: Path) -> None:
    port = free_port()
    process = run_web(gallery.database_url, "--host", "127.0.0.1", "--port", str(port))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/styles/neon-noir", timeout=5)
                break
            except httpx.ConnectError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["name"] == "neon-noir"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok\n"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"Gallery at http://127.0.0.1:{port}/" in output


def test_python_m_web_refuses_an_unmigrated_registry(tmp_path: Path) -> None:
    process = run_web(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", "--port", str(free_port()))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "not 0004" in output and "python -m bot" in output and "Traceback" not in output


def test_python_m_web_says_when_the_port_is_taken(gallery) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_web(gallery.database_url, "--port", str(port))
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and f"Could not listen on 127.0.0.1:{port}" in output and "Traceback" not in output


async def test_rate_limit_per_client_address(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await registry.upgrade_to_head(url)
    engine = registry.create_engine(url)
    server = await start_web_server(registry.create_session_factory(engine), host="127.0.0.1", port=0,
                                    rate_limit="5/minute")  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            statuses = [(await client.get("/api/styles")).status_code for _ in range(5)]
            limited = await client.get("/api/styles")
            page = await client.get("/")
            static = await client.get("/static/gallery.css")  # assets do not count
        assert statuses == [200] * 5
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Too many requests" in limited.json()["message"]
        assert page.status_code == 429 and "Too many requests" in page.text
        assert static.status_code == 200
    finally:
        await server.stop()
        await engine.dispose()


def test_web_imports_neither_torch_nor_discord_and_queries_through_registry() -> None:
    script = (
        "import sys, web, web.app, web.server, web.__main__, web.data\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'discord', 'bot'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == ""
    # No SQL of its own: the gallery reads through registry/ functions only.
    for source in (PROJECT_ROOT / "web").glob("*.py"):
        text = source.read_text()
        for line in text.splitlines():
            if "import" in line and "sqlalchemy" in line:  # session types and error classes, no query building
                assert "sqlalchemy.ext.asyncio import" in line or "sqlalchemy.exc import" in line, (source.name, line)
        assert "select(" not in text and "text(" not in text.replace("_text(", ""), source.name
