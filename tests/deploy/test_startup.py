"""`python -m bot` starts for real: migrations, worker warm-up and command registration.

The bot runs as a subprocess with the demo model against a stand-in Discord: the REST endpoints that
login and command sync use, and a gateway websocket that answers HELLO / IDENTIFY / READY and
heartbeats (plain-text JSON frames, which discord.py accepts as well as compressed ones).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APPLICATION_ID = "910000000000000001"
BOT_USER = {"id": "910000000000000002", "username": "stylecodes", "discriminator": "0", "avatar": None, "bot": True}


class StandInDiscord:
    """Just enough of Discord for a bot to log in, publish its commands and go ready."""

    def __init__(self) -> None:
        self.synced_commands: list[list[dict]] = []
        self.identified = asyncio.Event()
        self.send_ready = asyncio.Event()  # clear it to hold READY back after IDENTIFY
        self.send_ready.set()
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/api/v10/users/@me", self.me),
                web.get("/api/v10/oauth2/applications/@me", self.application),
                web.get("/api/v10/gateway", self.gateway),
                web.get("/api/v10/gateway/bot", self.gateway),
                web.put("/api/v10/applications/{application_id}/commands", self.bulk_commands),
                web.get("/gateway", self.websocket),
            ]
        )
        self.port = 0

    @staticmethod
    def json(data: object) -> web.Response:
        # discord.py parses JSON only with exactly this content type.
        return web.Response(body=json.dumps(data).encode(), content_type="application/json")

    async def me(self, request: web.Request) -> web.Response:
        return self.json(BOT_USER)

    async def application(self, request: web.Request) -> web.Response:
        return self.json(
            {
                "id": APPLICATION_ID,
                "name": "stylecodes",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": {**BOT_USER, "id": "910000000000000003", "bot": False},
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def gateway(self, request: web.Request) -> web.Response:
        return self.json(
            {
                "url": f"ws://127.0.0.1:{self.port}/gateway",
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
            }
        )

    async def bulk_commands(self, request: web.Request) -> web.Response:
        assert request.match_info["application_id"] == APPLICATION_ID
        commands = await request.json()
        self.synced_commands.append(commands)
        return self.json(
            [
                {**command, "id": str(920000000000000000 + i), "application_id": APPLICATION_ID, "version": "1"}
                for i, command in enumerate(commands)
            ]
        )

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 30000}, "s": None, "t": None}))
        async for message in ws:
            payload = json.loads(message.data)
            if payload["op"] == 2:  # IDENTIFY
                self.identified.set()
                await self.send_ready.wait()
                ready = {
                    "v": 10,
                    "user": BOT_USER,
                    "guilds": [],
                    "session_id": "stand-in-session",
                    "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                    "application": {"id": APPLICATION_ID, "flags": 0},
                }
                await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}))
            elif payload["op"] == 1:  # heartbeat
                await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
        return ws


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_bot(
    data_dir: Path, discord_port: int, metrics_port: int, web_port: int | None = None
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECODES_")}
    env.update(
        PYTHONPATH=str(PROJECT_ROOT),
        DISCORD_TOKEN="stand-in-token",
        STYLECODES_MODEL_VERSION="0",
        STYLECODES_DATA_DIR=str(data_dir),
        STYLECODES_DISCORD_API_BASE=f"http://127.0.0.1:{discord_port}/api/v10",
        STYLECODES_DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{discord_port}/gateway",
        STYLECODES_METRICS_PORT=str(metrics_port),
        STYLECODES_WEB_PORT=str(web_port or free_port()),  # the gallery, served inside the bot by default
        HF_HUB_OFFLINE="1",
    )
    # From the project root, where alembic.ini lives, as a deployment runs it.
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_until(
    process: asyncio.subprocess.Process, needles: set[str], log: list[str], *, within_s: float
) -> None:
    """Read the bot's log until every needle has appeared, in any order."""
    missing = set(needles)

    async def scan() -> None:
        while missing:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"bot exited before logging {missing}:\n" + "".join(log))
            log.append(line.decode(errors="replace"))
            missing.difference_update({needle for needle in missing if needle in log[-1]})

    try:
        await asyncio.wait_for(scan(), within_s)
    except TimeoutError:
        raise AssertionError(f"bot did not log {missing} within {within_s} s:\n" + "".join(log)) from None


async def stop(process: asyncio.subprocess.Process, log: list[str]) -> int:
    process.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(process.communicate(), 60)
    log.append(rest.decode(errors="replace"))
    return process.returncode


@pytest.fixture
async def discord_stand_in():
    stand_in = StandInDiscord()
    runner = web.AppRunner(stand_in.app)
    await runner.setup()
    stand_in.port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", stand_in.port)
    await site.start()
    yield stand_in
    await runner.cleanup()


async def test_demo_bot_starts_migrates_warms_up_and_registers_commands(tmp_path, discord_stand_in):
    data_dir = tmp_path / "data"
    metrics_port, web_port = free_port(), free_port()
    log: list[str] = []
    discord_stand_in.send_ready.clear()
    process = await start_bot(data_dir, discord_stand_in.port, metrics_port, web_port)
    try:
        await asyncio.wait_for(discord_stand_in.identified.wait(), 180)
        async with aiohttp.ClientSession() as http:
            # Logged in, gateway identified, no READY yet: not healthy.
            async with http.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
                assert response.status == 503
                health = await response.json()
            assert health["ok"] is False and health["ready"] is False and health["closed"] is False
            discord_stand_in.send_ready.set()
            await read_until(process, {"event=model_ready version=0", "event=ready"}, log, within_s=180)
            async with http.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
                assert response.status == 200
                health = await response.json()
            assert health["ok"] is True and health["ready"] is True and health["user"] == "stylecodes"
            assert health["models_loaded"] == [0]
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                assert "stylecodes_model_loaded" in await response.text()
            # The same process serves the public gallery over the registry it migrated.
            async with http.get(f"http://127.0.0.1:{web_port}/") as response:
                assert response.status == 200 and "<h2>Trending" in await response.text()
    finally:
        returncode = await stop(process, log)
    output = "".join(log)
    assert returncode == 0, output
    assert "stand-in-token" not in output  # the token is never logged

    # Migrations: the SQLite registry is at Alembic's head revision.
    head = ScriptDirectory.from_config(Config(str(PROJECT_ROOT / "alembic.ini"))).get_current_head()
    with sqlite3.connect(data_dir / "stylecodes.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]

    # Warm-up reported the demo model's missing safety checker once.
    assert output.count("has no safety checker") == 1

    # Registration: one bulk PUT with the command schema.
    assert len(discord_stand_in.synced_commands) == 1
    names = {command["name"] for command in discord_stand_in.synced_commands[0]}
    assert {"imagine", "stylecode", "settings"} <= names
    imagine = next(c for c in discord_stand_in.synced_commands[0] if c["name"] == "imagine")
    assert imagine["options"][0]["name"] == "prompt"

    # A restart with unchanged commands does not publish them again (Discord rate-limits updates).
    discord_stand_in.identified.clear()
    log.clear()
    process = await start_bot(data_dir, discord_stand_in.port, free_port())
    try:
        await read_until(process, {"event=commands_unchanged", "event=ready"}, log, within_s=180)
    finally:
        assert await stop(process, log) == 0, "".join(log)
    assert len(discord_stand_in.synced_commands) == 1
