"""Usage rows through the job lifecycle, restart recovery, history, counters and guild settings."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select

import registry
from registry import InvalidSettingError, InvalidStatusError, RegistryError, UsageNotFoundError
from registry.models import Style, Usage
from registry.trending import HALF_LIFE_DAYS, add_use, decayed_uses, use_weight
from stylecodes.codec import EXAMPLE_CODE, random_code

ALICE, BOB = 1001, 1002
GUILD = 501
REQUEST = dict(
    prompt="a lighthouse at dusk",
    seed=7,
    steps=20,
    guidance_scale=3.0,
    strength=0.9,
    width=512,
    height=512,
    model_version=1,
)


def job_id() -> str:
    return uuid.uuid4().hex


async def record(session, *, revision_id=None, code=None, user=BOB, **overrides):
    return await registry.record_usage(
        session,
        job_id=job_id(),
        user_id=user,
        guild_id=GUILD,
        channel_id=77,
        revision_id=revision_id,
        code=code,
        **{**REQUEST, **overrides},
    )


async def test_lifecycle_and_full_request(session) -> None:
    revision = await registry.create_style(session, name="neon-noir", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
    usage = await record(session, revision_id=revision.id, negative_prompt="blurry", count=4)
    assert usage.status == "queued" and usage.code == EXAMPLE_CODE and usage.style_id == revision.style_id
    running = await registry.set_usage_status(session, usage.job_id, "running")
    assert running.started_at is not None and running.finished_at is None
    link = "https://discord.com/channels/501/77/123"
    done = await registry.set_usage_status(session, usage.job_id, "done", message_link=link)
    assert done.finished_at >= done.started_at >= done.queued_at
    stored = await registry.get_usage(session, usage.job_id)
    assert (stored.status, stored.message_link, stored.negative_prompt, stored.count) == ("done", link, "blurry", 4)
    assert (stored.prompt, stored.seed, stored.steps, stored.guidance_scale, stored.strength) == (
        "a lighthouse at dusk",
        7,
        20,
        3.0,
        0.9,
    )
    assert (stored.width, stored.height, stored.model_version, stored.user_id, stored.guild_id, stored.channel_id) == (
        512,
        512,
        1,
        BOB,
        GUILD,
        77,
    )


async def test_failure_keeps_the_error_text(session) -> None:
    usage = await record(session, code=EXAMPLE_CODE)
    assert usage.revision_id is None and usage.style_id is None and usage.code == EXAMPLE_CODE
    failed = await registry.set_usage_status(session, usage.job_id, "failed", error="GPU out of memory")
    assert failed.error == "GPU out of memory" and failed.finished_at is not None


async def test_message_link_after_done(session) -> None:
    usage = await record(session)
    await registry.set_usage_status(session, usage.job_id, "done")
    await registry.set_usage_message_link(session, usage.job_id, "https://discord.com/channels/1/2/3")
    assert (await registry.get_usage(session, usage.job_id)).message_link == "https://discord.com/channels/1/2/3"
    with pytest.raises(UsageNotFoundError):
        await registry.set_usage_message_link(session, job_id(), "https://discord.com/channels/1/2/4")


async def test_bad_transitions_and_unknown_jobs(session) -> None:
    usage = await record(session)
    await registry.set_usage_status(session, usage.job_id, "cancelled")
    with pytest.raises(InvalidStatusError, match="is `cancelled` and cannot become `running`"):
        await registry.set_usage_status(session, usage.job_id, "running")
    with pytest.raises(InvalidStatusError, match="not a job status"):
        await registry.set_usage_status(session, usage.job_id, "exploded")
    with pytest.raises(UsageNotFoundError):
        await registry.set_usage_status(session, job_id(), "running")
    assert (await registry.get_usage(session, usage.job_id)).status == "cancelled"


async def test_bad_usage_inputs(session) -> None:
    with pytest.raises(RegistryError, match="uuid4 hex"):
        await registry.record_usage(session, job_id="job-1", user_id=BOB, guild_id=None, channel_id=None, **REQUEST)
    with pytest.raises(registry.InvalidCodeError):
        await record(session, code="nonsense")
    with pytest.raises(RegistryError, match="no revision with id"):
        await record(session, revision_id=424242)
    usage = await record(session)
    with pytest.raises(RegistryError, match="already recorded"):
        await registry.record_usage(
            session, job_id=usage.job_id, user_id=BOB, guild_id=None, channel_id=None, **REQUEST
        )
    assert await session.scalar(select(func.count()).select_from(Usage)) == 1


async def test_unfinished_usages_for_restart_recovery(session) -> None:
    queued, running, done = await record(session), await record(session), await record(session)
    await registry.set_usage_status(session, running.job_id, "running")
    await registry.set_usage_status(session, done.job_id, "running")
    await registry.set_usage_status(session, done.job_id, "done")
    unfinished = await registry.unfinished_usages(session)
    assert [(u.job_id, u.status) for u in unfinished] == [(queued.job_id, "queued"), (running.job_id, "running")]


async def test_finished_generations_count_towards_popularity(session) -> None:
    revision = await registry.create_style(session, name="neon-noir", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
    jobs = [await record(session, revision_id=revision.id) for _ in range(3)]
    for usage in jobs[:2]:
        await registry.set_usage_status(session, usage.job_id, "done")
    await registry.set_usage_status(session, jobs[2].job_id, "failed", error="boom")
    style = await session.get(Style, revision.style_id, populate_existing=True)
    assert style.use_count == 2 and style.last_used_at is not None
    assert decayed_uses(style.trending_score, registry.models.utcnow()) == pytest.approx(2.0, rel=1e-3)


async def test_style_history(session) -> None:
    first = await registry.create_style(session, name="neon-noir", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
    second = await registry.add_revision(session, "neon-noir", code=random_code(1).canonical, user_id=ALICE)
    for revision, uses in ((first, 2), (second, 3)):
        for _ in range(uses):
            usage = await record(session, revision_id=revision.id)
            await registry.set_usage_status(session, usage.job_id, "done")
    await record(session, revision_id=second.id)  # still queued: listed as recent, not counted
    history = await registry.style_history(session, "neon-noir", user_id=BOB, guild_id=GUILD, recent=4)
    assert history.uses_per_revision == {1: 2, 2: 3}
    assert history.uses_per_day == [(dt.datetime.now(dt.UTC).date(), 5)]
    assert len(history.recent) == 4 and history.recent[0].status == "queued"
    assert all(u.revision is not None for u in history.recent)  # loaded eagerly, not lazily
    with pytest.raises(registry.StyleNotFoundError):
        await registry.style_history(session, "missing-style", user_id=BOB, guild_id=GUILD)


async def test_guild_settings(session) -> None:
    defaults = await registry.get_guild_settings(session, GUILD)
    assert (defaults.default_strength, defaults.default_steps, defaults.allow_nsfw_outside_nsfw_channels) == (
        0.9,
        20,
        False,
    )
    updated = await registry.update_guild_settings(session, GUILD, default_strength=1.2, default_steps=30)
    assert (updated.default_strength, updated.default_steps) == (1.2, 30)
    await registry.update_guild_settings(session, GUILD, allow_nsfw_outside_nsfw_channels=True)
    stored = await registry.get_guild_settings(session, GUILD)
    assert (stored.default_strength, stored.default_steps, stored.allow_nsfw_outside_nsfw_channels) == (1.2, 30, True)
    with pytest.raises(InvalidSettingError, match=r"between 0\.0 and 1\.5"):
        await registry.update_guild_settings(session, GUILD, default_strength=2.0)
    with pytest.raises(InvalidSettingError, match="between 1 and 100"):
        await registry.update_guild_settings(session, GUILD, default_steps=0)
    assert (await registry.get_guild_settings(session, GUILD)).default_strength == 1.2


def test_trending_score_is_a_decayed_use_count() -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    score = None
    for days_ago in (0, 1, 2):
        score = add_use(score, now - dt.timedelta(days=days_ago))
    # 1 + 1/2 + 1/4 with a one-day half-life.
    assert HALF_LIFE_DAYS == 1.0
    assert decayed_uses(score, now) == pytest.approx(1.75)
    assert decayed_uses(score, now + dt.timedelta(days=1)) == pytest.approx(0.875)
    assert add_use(None, now, uses=4) == pytest.approx(use_weight(now) + 2)
    # Years out the stored number stays small (no overflow), and order is kept.
    later = add_use(None, now + dt.timedelta(days=3650))
    assert later < 5000 and later > score


async def test_racing_status_updates_apply_exactly_one(sessions) -> None:
    async with sessions() as session:
        usage = await record(session)

    async def move(status: str):
        async with sessions() as session:
            return await registry.set_usage_status(session, usage.job_id, status)

    results = await asyncio.gather(move("done"), move("cancelled"), return_exceptions=True)
    applied = [r for r in results if isinstance(r, Usage)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(applied) == 1 and len(refused) == 1 and isinstance(refused[0], InvalidStatusError), results
    async with sessions() as session:
        assert (await registry.get_usage(session, usage.job_id)).status == applied[0].status
