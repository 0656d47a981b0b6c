"""What the front-end tests share: a style saved in the registry, a command's first answer, reading a result
message and the usage row behind it, and a dispatcher scripted to answer every job with given events."""

from __future__ import annotations

import asyncio

import registry
from bot.dispatch.base import JobHandle
from bot.jobs import ImagineResult, JobDone
from tests.bot.frontend.conftest import png
from tests.bot.frontend.payloads import ALICE

CODE = "C_d_AAI_rQglIvUb1_fC0"  # a version-0 (demo) code
OTHER_CODE = "AAAAAAAAAAAAAAAAAAAA0"


def fields(call) -> dict[str, str]:
    return {f["name"]: f["value"] for f in call.embeds[0]["fields"]}


async def usage_of(session_factory, job_id: str) -> registry.Usage:
    async with session_factory() as session:
        return await registry.get_usage(session, job_id)


def job_id_of(call) -> str:
    reroll = next(b for b in call.buttons() if b["label"] == "Reroll")
    return reroll["custom_id"].rsplit(":", 1)[-1]


async def save(
    session_factory, name: str, code: str = CODE, *, owner: int = ALICE, visibility: str = "public", **extra
):
    """A style saved straight in the registry (a guild style belongs to guild 1)."""
    async with session_factory() as session:
        return await registry.create_style(
            session, name=name, code=code, owner_id=owner, guild_id=None if visibility != "guild" else 1,
            visibility=visibility, **extra,
        )  # fmt: skip


async def reply_to(harness, path: str, **options):
    """Send the command `path` (e.g. "stylecode show"); its token and the bot's first answer to it."""
    token = harness.send(harness.payloads.command(path, **options))
    return token, await harness.first(token, "callback")


def data(call) -> dict:
    return call.payload["data"]


def done_event(count: int = 1) -> JobDone:
    return JobDone(ImagineResult(images_png=[png()] * count, nsfw=[False] * count))


def script_jobs(harness, monkeypatch, script, *, position: int = 1) -> None:
    """The dispatcher answers every submitted job with the events of `script(job)` (an async generator)."""

    async def submit(job):
        return JobHandle(job.job_id, position, lambda: script(job))

    monkeypatch.setattr(harness.dispatcher, "submit", submit)


async def gated(gate: asyncio.Event, *events):
    await gate.wait()
    for event in events:
        yield event


async def imagine_until_queued(harness, **options) -> str:
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2, **options))
    await harness.first(token, "edit_original")  # "Queued"
    return token


