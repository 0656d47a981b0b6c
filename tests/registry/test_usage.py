"""Usage rows through the job lifecycle, restart recovery, history, counters and guild settings."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import numpy as np
import pytest
from sqlalchemy import func, select

import registry
from registry import (
    DuplicateJobError,
    InvalidJobIdError,
    InvalidSettingError,
    InvalidStatusError,
    InvalidUsageError,
    LimitExceededError,
    RegistryError,
    RevisionNotFoundError,
    UsageNotFoundError,
)
from registry.models import GuildSettings, Style, Usage
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
        revision_id=revision_id,
        code=code,
        **{"user_id": user, "guild_id": GUILD, "channel_id": 77, **REQUEST, **overrides},
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


async def test_delivery_is_marked_once_and_the_link_may_follow(session) -> None:
    usage = await record(session)
    await registry.set_usage_status(session, usage.job_id, "done")
    await registry.mark_usage_delivered(session, usage.job_id)
    first = (await registry.get_usage(session, usage.job_id)).delivered_at
    assert first is not None and first.tzinfo is not None
    await registry.mark_usage_delivered(session, usage.job_id, message_link="https://discord.com/channels/1/2/3")
    stored = await registry.get_usage(session, usage.job_id)
    assert stored.message_link == "https://discord.com/channels/1/2/3"
    assert stored.delivered_at == first  # the first delivery time is kept
    with pytest.raises(UsageNotFoundError):
        await registry.mark_usage_delivered(session, job_id(), message_link="https://discord.com/channels/1/2/4")


async def test_undelivered_usages_are_the_finished_outcomes_nobody_posted(session) -> None:
    queued = await record(session)
    running = await record(session)
    await registry.set_usage_status(session, running.job_id, "running")
    done = await record(session)
    await registry.set_usage_status(session, done.job_id, "done")
    failed = await record(session)
    await registry.set_usage_status(session, failed.job_id, "failed", error="GPU out of memory")
    cancelled = await record(session)
    await registry.set_usage_status(session, cancelled.job_id, "cancelled")
    posted = await record(session)
    await registry.set_usage_status(session, posted.job_id, "done")
    await registry.mark_usage_delivered(session, posted.job_id, message_link="https://discord.com/channels/1/2/3")
    old = await record(session)
    await registry.set_usage_status(session, old.job_id, "done")
    await session.execute(
        Usage.__table__.update()
        .where(Usage.job_id == old.job_id)
        .values(finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    )
    await session.commit()

    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    undelivered = await registry.undelivered_usages(session, since=since)
    assert [u.job_id for u in undelivered] == [done.job_id, failed.job_id]
    assert undelivered[1].error == "GPU out of memory"
    assert queued.job_id not in {u.job_id for u in undelivered}


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
    for bad_job_id in ("job-1", uuid.uuid4().hex.upper(), None, 12):
        with pytest.raises(InvalidJobIdError, match="uuid4 hex"):
            await registry.record_usage(
                session, job_id=bad_job_id, user_id=BOB, guild_id=None, channel_id=None, **REQUEST
            )
    with pytest.raises(registry.InvalidCodeError):
        await record(session, code="nonsense")
    for revision_id in (424242, 0, -3, 2**31, 10**30, True, "7"):
        with pytest.raises(RevisionNotFoundError, match="revision"):
            await record(session, revision_id=revision_id)
    usage = await record(session)
    with pytest.raises(DuplicateJobError, match="already recorded"):
        await registry.record_usage(
            session, job_id=usage.job_id, user_id=BOB, guild_id=None, channel_id=None, **REQUEST
        )
    assert await session.scalar(select(func.count()).select_from(Usage)) == 1
    # Still RegistryErrors, so callers that catch the base class keep working.
    assert all(issubclass(e, RegistryError) for e in (InvalidJobIdError, DuplicateJobError, InvalidUsageError))


BAD_REQUEST_FIELDS = [
    ("seed", -1, "from 0 to 9223372036854775807"),
    ("seed", 2**63, "from 0 to 9223372036854775807"),
    ("seed", 1.5, "whole number"),
    ("seed", "7", "whole number"),
    ("seed", True, "whole number"),
    ("steps", 0, "`steps` must be a whole number from 1 to 32767"),
    ("steps", 40_000, "`steps`"),
    ("width", 0, "`width`"),
    ("height", 2**15, "`height`"),
    ("count", 0, "`count` must be a whole number from 1 to 32767"),
    ("model_version", -1, "`model_version`"),
    ("guidance_scale", float("nan"), "`guidance_scale` must be a finite number"),
    ("guidance_scale", "3", "`guidance_scale`"),
    ("strength", float("inf"), "`strength` must be a finite number"),
    ("strength", 10**400, "`strength`"),
    ("strength", None, "`strength`"),
    ("prompt", None, "The prompt must be text"),
    ("prompt", 5, "The prompt must be text"),
    ("negative_prompt", ["blurry"], "The negative prompt must be text"),
    ("user_id", "bob", "`user_id`"),
    ("guild_id", -5, "`guild_id`"),
    ("channel_id", 2**64, "`channel_id`"),
]


async def test_bad_request_fields_write_nothing(session) -> None:
    for field, value, message in BAD_REQUEST_FIELDS:
        with pytest.raises(InvalidUsageError, match=message):
            await record(session, **{field: value})
    assert await session.scalar(select(func.count()).select_from(Usage)) == 0
    # The edges of every range, and numpy integers, are fine.
    usage = await record(session, seed=np.int64(2**63 - 1), steps=32767, width=np.int32(1), count=32767,
                         guidance_scale=np.float32(2.5), strength=1, model_version=0)  # fmt: skip
    stored = await registry.get_usage(session, usage.job_id)
    assert (stored.seed, stored.steps, stored.width, stored.count, stored.guidance_scale, stored.strength) == (
        2**63 - 1,
        32767,
        1,
        32767,
        2.5,
        1.0,
    )


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
    for limits in ({"recent": -1}, {"recent": 26}, {"recent": True}, {"days": 0}, {"days": "7"}):
        with pytest.raises(LimitExceededError):
            await registry.style_history(session, "neon-noir", user_id=BOB, guild_id=GUILD, **limits)
    assert (await registry.style_history(session, "neon-noir", user_id=BOB, guild_id=GUILD, recent=0)).recent == []


async def test_style_history_shows_only_uses_from_the_asking_context(session) -> None:
    CAROL, OTHER_GUILD = 1003, 502
    revision = await registry.create_style(session, name="neon-noir", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
    made = {}
    for where, user, guild in (
        ("bob-here", BOB, GUILD),
        ("carol-here", CAROL, GUILD),
        ("carol-away", CAROL, OTHER_GUILD),
        ("bob-dm", BOB, None),
        ("carol-dm", CAROL, None),
    ):
        usage = await registry.record_usage(
            session, job_id=job_id(), user_id=user, guild_id=guild, channel_id=9, revision_id=revision.id,
            **{**REQUEST, "prompt": f"secret prompt {where}"},
        )  # fmt: skip
        await registry.set_usage_status(session, usage.job_id, "done", message_link=f"https://example/{where}")
        made[usage.id] = where

    async def seen(user, guild) -> set[str]:
        history = await registry.style_history(session, "neon-noir", user_id=user, guild_id=guild)
        # The counts are aggregates over every use, wherever it was made.
        assert history.uses_per_revision == {1: 5} and history.uses_per_day[0][1] == 5
        return {made[usage.id] for usage in history.recent}

    assert await seen(BOB, GUILD) == await seen(CAROL, GUILD) == {"bob-here", "carol-here"}  # that guild only
    assert await seen(ALICE, OTHER_GUILD) == {"carol-away"}
    assert await seen(BOB, None) == {"bob-here", "bob-dm"}  # in DMs: the asker's own uses
    assert await seen(CAROL, None) == {"carol-here", "carol-away", "carol-dm"}
    assert await seen(ALICE, None) == set()  # the owner sees counts, not other people's prompts
    assert await seen(None, None) == set()


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
    for bad in (
        {"default_strength": "1.0"},
        {"default_strength": True},
        {"default_strength": float("nan")},
        {"default_steps": 20.0},
        {"default_steps": True},
        {"allow_nsfw_outside_nsfw_channels": "no"},
        {"allow_nsfw_outside_nsfw_channels": 0},
    ):
        with pytest.raises(InvalidSettingError):
            await registry.update_guild_settings(session, GUILD, **bad)
    stored = await registry.get_guild_settings(session, GUILD)
    assert (stored.default_strength, stored.default_steps, stored.allow_nsfw_outside_nsfw_channels) == (1.2, 30, True)


async def test_racing_first_guild_settings_writes_both_apply(sessions) -> None:
    async def change(guild: int, **values):
        async with sessions() as session:
            return await registry.update_guild_settings(session, guild, **values)

    for guild in range(600, 605):  # guilds without a settings row: both writers are the first
        results = await asyncio.gather(
            change(guild, default_steps=42), change(guild, default_strength=1.1), return_exceptions=True
        )
        assert all(isinstance(r, GuildSettings) for r in results), results
        async with sessions() as session:
            stored = await registry.get_guild_settings(session, guild)
            assert (stored.default_steps, stored.default_strength) == (42, 1.1)
            assert await session.scalar(select(func.count()).select_from(GuildSettings)) == guild - 599


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


# --- the usage writer: concurrent record_usage calls share INSERTs ------------------------------------


async def test_concurrent_records_share_inserts_and_each_is_committed_on_return(sessions) -> None:
    async with sessions() as session:
        revision = await registry.create_style(session, name="busy", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
    writer_stats = {}

    async def one() -> tuple[str, int]:
        async with sessions() as session:
            usage = await record(session, revision_id=revision.id)
            writer_stats["writer"] = registry.usage_writer.usage_writer(session)
        async with sessions() as reader:  # committed: another connection sees it at once
            assert await reader.scalar(select(Usage.id).where(Usage.job_id == usage.job_id)) == usage.id
        return usage.job_id, usage.id

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert len({usage_id for _, usage_id in results}) == 40
    writer = writer_stats["writer"]
    assert writer.rows == 40 and writer.batches < 40  # rows of concurrent calls went in together
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Usage)) == 40
        assert await session.scalar(select(Style.use_count).where(Style.name == "busy")) == 0  # queued only


async def test_a_job_id_repeated_in_one_batch_is_written_once(sessions) -> None:
    repeated = job_id()

    async def one():
        async with sessions() as session:
            return await registry.record_usage(session, job_id=repeated, code=EXAMPLE_CODE, user_id=BOB,
                                               guild_id=None, channel_id=None, **REQUEST)  # fmt: skip

    outcomes = await asyncio.gather(*(one() for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(o, Usage) for o in outcomes) == 1
    assert sum(isinstance(o, DuplicateJobError) for o in outcomes) == 2
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Usage)) == 1


async def test_a_failing_row_fails_only_its_own_call(sessions) -> None:
    """An integrity error in a batch: the batch is retried row by row, and only that row's caller sees it."""
    from sqlalchemy import delete
    from sqlalchemy.exc import IntegrityError

    from registry.models import Revision
    from registry.usage import _revision_origin

    async with sessions() as session:
        good = await registry.create_style(session, name="stays", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
        gone = await registry.create_style(session, name="goes", code=EXAMPLE_CODE, owner_id=ALICE, guild_id=None)
        await _revision_origin(session, gone.id)  # cached: record_usage will not look the revision up again
        await session.execute(delete(Revision).where(Revision.id == gone.id))  # behind the registry's back
        await session.commit()

    async def one(revision_id: int):
        async with sessions() as session:
            return await record(session, revision_id=revision_id)

    outcomes = await asyncio.gather(one(good.id), one(gone.id), one(good.id), return_exceptions=True)
    assert isinstance(outcomes[0], Usage) and isinstance(outcomes[2], Usage)
    assert isinstance(outcomes[1], IntegrityError)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Usage)) == 2
