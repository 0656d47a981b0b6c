"""Restart recovery: jobs the registry still has as queued/running are resumed or failed, with the user told."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from bot.dispatch.local import LocalDispatcher
from bot.dispatch.recovery import recover_unfinished, shard_of, shard_owner
from bot.jobs import ImagineResult, JobDone
from bot.protocol.limits import DispatchLimits
from bot.worker.models import ModelCache
from tests.bot.dispatch.helpers import imagine_job, named_style, record, usage

ALICE, BOB = 11, 22


@pytest.fixture
async def dispatcher(demo_engine, session_factory):
    limits = DispatchLimits(served_versions=(0,), progress_interval_s=0.0)
    dispatcher = LocalDispatcher(
        limits=limits, models=ModelCache(lambda v: demo_engine), session_factory=session_factory
    )
    await dispatcher.start()
    yield dispatcher
    await dispatcher.close()


async def crashed_jobs(session_factory):
    """Two jobs the previous bot process left behind: one still queued, one that was running."""
    from registry.usage import set_usage_status

    queued, running = imagine_job(ALICE, count=2, seed=5), imagine_job(BOB, seed=9, steps=3)
    for job in (queued, running):
        await record(session_factory, job)
    async with session_factory() as session:
        await set_usage_status(session, running.job_id, "running")
    return queued, running


async def test_unfinished_jobs_are_resumed_from_the_registry(dispatcher, session_factory):
    queued, running = await crashed_jobs(session_factory)
    resumed, notified = [], []

    async def on_resumed(row, handle):
        resumed.append((row.job_id, handle))

    async def notify(row, text):
        notified.append((row.job_id, text))

    report = await recover_unfinished(session_factory, dispatcher, notify, on_resumed=on_resumed)
    assert report.resubmitted == [queued.job_id, running.job_id]
    assert report.failed == [] and notified == []
    for job, (job_id, handle) in zip((queued, running), resumed, strict=True):
        assert job_id == job.job_id == handle.job_id
        result = await handle.result()
        assert isinstance(result, JobDone) and isinstance(result.payload, ImagineResult)
        # Rebuilt from the row: same seeds, same count, same size.
        assert [m["seed"] for m in result.payload.metadata] == [r.seed for r in job.requests]
        row = await usage(session_factory, job.job_id)
        assert row.status == "done" and row.error is None
    again = await recover_unfinished(session_factory, dispatcher, notify, on_resumed=on_resumed)
    assert again.resubmitted == again.failed == []  # nothing left unfinished


def failures(reason: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("stylecodes_job_failures_total", {"reason": reason}) or 0.0


async def test_jobs_that_cannot_be_resumed_are_failed_and_the_user_told(dispatcher, session_factory):
    queued, running = await crashed_jobs(session_factory)
    notified = []

    async def notify(row, text):
        notified.append((row.job_id, row.channel_id, text))

    before = failures("restart")
    report = await recover_unfinished(session_factory, dispatcher, notify)  # front end cannot follow jobs
    assert failures("restart") == before + 2  # counted with the other failures, by cause
    assert report.failed == [queued.job_id, running.job_id]
    assert [n[0] for n in notified] == report.failed
    assert all(n[1] == 2 for n in notified)  # the row says where to post
    for job in (queued, running):
        row = await usage(session_factory, job.job_id)
        assert row.status == "failed"
        assert "The bot restarted before your job could finish" in row.error
        assert row.error == next(text for job_id, _, text in notified if job_id == job.job_id)
    assert dispatcher.active_jobs == 0


async def test_unserved_version_after_restart_is_failed_with_reason(dispatcher, session_factory):
    from registry.usage import record_usage

    async with session_factory() as session:
        await record_usage(
            session, job_id="a" * 32, user_id=ALICE, guild_id=None, channel_id=3, prompt="a cow", seed=1, steps=2,
            guidance_scale=3.0, strength=0.9, width=64, height=64, model_version=1,
        )  # fmt: skip
    notified = []

    async def notify(row, text):
        notified.append(text)

    async def on_resumed(row, handle):  # pragma: no cover - must not be reached
        raise AssertionError("a version-1 job cannot be resumed by a version-0 deployment")

    report = await recover_unfinished(session_factory, dispatcher, notify, on_resumed=on_resumed)
    assert report.failed == ["a" * 32]
    assert "version 1 are not served here" in notified[0]
    assert (await usage(session_factory, "a" * 32)).status == "failed"


async def test_seeds_that_wrap_past_the_largest_seed_are_rebuilt_as_they_were_queued(session_factory):
    from bot.dispatch.recovery import job_from_usage
    from bot.jobs import MAX_SEED, consecutive_seeds
    from registry.usage import get_usage

    seeds = consecutive_seeds(MAX_SEED, 2)
    assert seeds == [MAX_SEED, 0]
    job = imagine_job(ALICE, count=2, seed=MAX_SEED)
    job.requests = [dataclasses.replace(request, seed=seed) for request, seed in zip(job.requests, seeds, strict=True)]
    await record(session_factory, job)
    async with session_factory() as session:
        rebuilt = job_from_usage(await get_usage(session, job.job_id))
    assert [request.seed for request in rebuilt.requests] == seeds


def guild_on_shard(shard: int, shard_count: int, n: int = 1) -> int:
    guild_id = ((shard + shard_count * n) << 22) | 12345  # the low 22 bits are not the shard's business
    assert shard_of(guild_id, shard_count) == shard
    return guild_id


async def test_each_bot_process_recovers_only_the_jobs_of_its_own_shards(demo_engine, session_factory):
    """Two bot processes over one registry, shards 0 and 1 of 2: every job resumed once, by its shard's owner."""
    jobs = {
        "dm": imagine_job(ALICE, seed=1),  # a direct message: shard 0
        "shard0": imagine_job(ALICE, seed=2),
        "shard1": imagine_job(BOB, seed=3),
        "shard1b": imagine_job(BOB, seed=4),
    }
    jobs["dm"].guild_id = None
    jobs["shard0"].guild_id = guild_on_shard(0, 2)
    jobs["shard1"].guild_id = guild_on_shard(1, 2)
    jobs["shard1b"].guild_id = guild_on_shard(1, 2, n=7)
    for job in jobs.values():
        await record(session_factory, job)
    limits = DispatchLimits(served_versions=(0,), progress_interval_s=0.0)
    reports, handles = [], {}

    async def on_resumed(row, handle):
        assert row.job_id not in handles, "resumed twice"
        handles[row.job_id] = handle

    async def notify(row, text):  # pragma: no cover - must not be reached
        raise AssertionError(text)

    for shard in (0, 1):
        process = LocalDispatcher(
            limits=limits, models=ModelCache(lambda v: demo_engine), session_factory=session_factory
        )
        await process.start()
        try:
            owns = shard_owner(2, [shard])
            reports.append(await recover_unfinished(session_factory, process, notify, on_resumed=on_resumed, owns=owns))
            for job_id in reports[-1].resubmitted:
                assert isinstance(await handles[job_id].result(), JobDone)
        finally:
            await process.close()
    ids = {name: job.job_id for name, job in jobs.items()}
    assert reports[0].resubmitted == [ids["dm"], ids["shard0"]]
    assert reports[1].resubmitted == [ids["shard1"], ids["shard1b"]]
    for job in jobs.values():
        assert (await usage(session_factory, job.job_id)).status == "done"


async def test_finished_outcomes_nobody_posted_are_made_again_or_told(dispatcher, session_factory):
    """The old process died between the result and its post. A `done` job is made again from its row (the
    in-process queue is gone, and with it the images) and its style's use is still counted once; a `failed`
    one is told its stored reason; a delivered one, or one finished over a day ago, is left alone."""
    import datetime as dt

    from registry.models import Style, Usage
    from registry.usage import mark_usage_delivered, set_usage_status

    remade, failed, posted, stale = (imagine_job(ALICE, seed=seed, count=2) for seed in (5, 7, 9, 11))
    revision = await named_style(session_factory, remade)
    await record(session_factory, remade, revision_id=revision.id)
    for job in (failed, posted, stale):
        await record(session_factory, job)
    async with session_factory() as session:
        for job in (remade, posted, stale):
            await set_usage_status(session, job.job_id, "done")
        await set_usage_status(session, failed.job_id, "failed", error="The engine ran out of memory.")
        await mark_usage_delivered(session, posted.job_id)
        two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        await session.execute(
            Usage.__table__.update().where(Usage.job_id == stale.job_id).values(finished_at=two_days_ago)
        )
        await session.commit()
    resumed, notified = {}, []

    async def on_resumed(row, handle):
        resumed[row.job_id] = handle

    async def notify(row, text):
        notified.append((row.job_id, text))

    report = await recover_unfinished(session_factory, dispatcher, notify, on_resumed=on_resumed)
    assert report.remade == [remade.job_id] and list(resumed) == [remade.job_id]
    assert report.resubmitted == report.reattached == report.failed == []
    assert notified == [(failed.job_id, "your job failed: The engine ran out of memory.")]
    result = await resumed[remade.job_id].result()
    assert isinstance(result, JobDone)
    assert [m["seed"] for m in result.payload.metadata] == [5, 6]  # the same images as the first time
    assert (await usage(session_factory, remade.job_id)).status == "done"
    async with session_factory() as session:
        assert await session.scalar(select(Style.use_count).where(Style.id == revision.style_id)) == 1


def test_a_process_running_every_shard_recovers_every_row():
    assert shard_owner(0, []) is None  # one gateway connection
    assert shard_owner(-1, []) is None  # Discord picks the count, one process runs them all
    assert shard_owner(4, []) is None  # STYLECODES_SHARD_IDS empty = all shards
    assert shard_owner(2, [1, 0]) is None
    owns = shard_owner(4, [1, 3])
    assert [owns(_Row(guild_on_shard(shard, 4))) for shard in range(4)] == [False, True, False, True]
    assert owns(_Row(None)) is False  # direct messages belong to shard 0


@dataclasses.dataclass
class _Row:
    guild_id: int | None
