"""The front-end harness: the real bot (cogs, tree, views) logged in against the stand-in REST server,
with the real in-process dispatcher running the demo model (version 0) over a migrated SQLite registry."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import discord
import pytest
from aiohttp.abc import AbstractResolver
from PIL import Image

from bot.config import Settings
from bot.dispatch.local import LocalDispatcher
from bot.frontend.app import BotResources, StylecodesBot
from bot.frontend.attachments import DISCORD_CDN_HOSTS, AttachmentPolicy
from bot.jobs import ImagineJob, new_job_id
from bot.protocol.limits import DispatchLimits
from bot.worker.models import ModelCache
from tests.bot.frontend.payloads import Payloads
from tests.bot.frontend.standin import Call, StandIn

DEMO_VERSION = 0
CODE = "C_d_AAI_rQglIvUb1_fC0"  # a version-0 (demo) code


class CdnResolver(AbstractResolver):
    """Resolves Discord's CDN host names to the stand-in on loopback; everything else fails to resolve."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        if host not in DISCORD_CDN_HOSTS and host != "127.0.0.1":
            raise OSError(f"test resolver: {host} is not a Discord CDN host")
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


def png(size: tuple[int, int] = (48, 40), colour: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Harness:
    bot: StylecodesBot
    standin: StandIn
    payloads: Payloads
    dispatcher: LocalDispatcher
    settings: Settings

    def send(self, payload: dict) -> str:
        """Deliver an interaction the way the gateway does; returns its token."""
        self.bot._connection.parse_interaction_create(payload)
        return payload["token"]

    async def first(self, token: str, kind: str, within: float = 20.0) -> Call:
        """The first call of `kind` made with this interaction token."""
        return await self.standin.wait_for(
            lambda calls: next((c for c in calls if c.token == token and c.kind == kind), None), within
        )

    async def ephemeral_error(self, token: str, within: float = 20.0) -> str:
        """The ephemeral message the error handler sent for this interaction (as a response or a followup)."""

        def find(calls: list[Call]) -> str | None:
            for call in calls:
                if call.token != token:
                    continue
                if call.kind == "callback" and call.payload.get("type") == 4 and call.ephemeral:
                    return call.payload["data"]["content"]
                if call.kind == "followup" and call.ephemeral:
                    return call.content
            return None

        return await self.standin.wait_for(find, within)

    async def final_edit(self, token: str, within: float = 30.0) -> Call:
        """The edit of the original response that carries the result embed."""
        return await self.standin.wait_for(
            lambda calls: next((c for c in calls if c.token == token and c.kind == "edit_original" and c.embeds), None),
            within,
        )


def slow_job(user_id: int, steps: int = 10) -> ImagineJob:
    """A job submitted straight to the dispatcher, to keep the worker busy (with `step_delay_s`)."""
    from stylecodes.codec import parse_code
    from stylecodes.requests import GenerationRequest
    from stylecodes.styles import CodeStyle

    request = GenerationRequest(
        prompt="busy", seed=0, styles=(CodeStyle(parse_code(CODE)),), steps=steps, width=64, height=64
    )
    return ImagineJob(new_job_id(), user_id, None, 1, 0, [request])


class ScriptedEngine:
    """The demo engine with two handles for tests: `hold()` makes the worker wait, inside its next
    engine call, until `release()`; `fail_prompts_with` makes generation of such prompts raise."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self._open = threading.Event()
        self._open.set()
        self.entered = threading.Event()  # set when an engine call starts
        self.fail_prompts_with: str | None = None
        self.fail_encode = False

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _enter(self) -> None:
        self.entered.set()
        self._open.wait(60)

    def encode(self, images, *args, **kwargs):
        self._enter()
        if self.fail_encode:
            raise RuntimeError("the scripted engine failed")
        return self._engine.encode(images, *args, **kwargs)

    def generate(self, requests, on_step=None):
        self._enter()
        if self.fail_prompts_with and any(self.fail_prompts_with in r.prompt for r in requests):
            raise RuntimeError("the scripted engine failed")
        return self._engine.generate(requests, on_step)


@pytest.fixture
def scripted_engine(demo_engine) -> Iterator[ScriptedEngine]:
    engine = ScriptedEngine(demo_engine)
    yield engine
    engine.release()  # never leave the worker thread waiting


@pytest.fixture
def fast_discord_retries(monkeypatch) -> None:
    """discord.py waits 1, 3, 5, 7 and 9 s between its tries of a request Discord answered with 5xx;
    here 10 ms each, so a test of a lasting outage takes no 25 s."""
    import discord.http
    import discord.webhook.async_

    real_sleep = asyncio.sleep

    async def short_sleep(delay: float, result=None):
        return await real_sleep(min(delay, 0.01), result)

    fast = types.ModuleType("asyncio")
    fast.__dict__.update(vars(asyncio))
    fast.sleep = short_sleep  # type: ignore[attr-defined]
    for module in (discord.webhook.async_, discord.http):
        monkeypatch.setattr(module, "asyncio", fast)


def make_settings(**overrides) -> Settings:
    values = dict(
        discord_token=None,
        model_version=DEMO_VERSION,
        image_size=64,
        preview_steps=2,
        progress_interval_s=1.5,
        max_jobs_per_user=2,
        queue_cap=100,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    original = discord.http.Route.BASE
    discord.http.Route.BASE = server.api_base
    try:
        yield server
    finally:
        discord.http.Route.BASE = original
        await server.close()


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def step_delay_s() -> float:
    return 0.0


@pytest.fixture
def engine(demo_engine):
    """The engine the worker runs: the demo model (tests may wrap it)."""
    return demo_engine


@pytest.fixture
async def harness(standin, session_factory, engine, settings, step_delay_s) -> AsyncIterator[Harness]:
    dispatcher = LocalDispatcher(
        limits=DispatchLimits.from_settings(settings),
        models=ModelCache(lambda version: engine),
        session_factory=session_factory,
        step_delay_s=step_delay_s,
    )
    await dispatcher.start()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=CdnResolver()))
    resources = BotResources(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        http_session=http,
        # The stand-in serves the CDN host names over plain http; the host check is the real one.
        attachment_policy=AttachmentPolicy(max_bytes=settings.max_attachment_bytes, schemes=frozenset({"http"})),
    )
    bot = StylecodesBot(resources)
    await bot.login("test-token")  # GET /users/@me and /oauth2/applications/@me, then setup_hook
    try:
        yield Harness(bot, standin, Payloads(bot.tree, standin), dispatcher, settings)
        if isinstance(engine, ScriptedEngine):
            engine.release()  # a test that left the worker held: let it finish its jobs, not wait out the hold
        await bot.wait_idle()
        assert bot.ack_gate.waiting == 0, "a command was never counted as acknowledged"
        assert not standin.violations, f"the bot sent what Discord refuses: {standin.violations}"
    finally:
        await bot.close()
        await dispatcher.close()
        await http.close()
    syncs = standin.of_kind("command_sync")
    assert not syncs, f"the bot tried to sync commands: {syncs}"
