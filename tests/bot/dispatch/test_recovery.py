"""Restart recovery: jobs the registry still has as queued/running are resumed or failed, with the user told."""

from __future__ import annotations

import dataclasses

import pytest

from bot.dispatch.base import DispatchLimits
from bot.dispatch.local import LocalDispatcher
from bot.dispatch.recovery import recover_unfinished
from bot.jobs import ImagineResult, JobDone
from bot.worker.models import ModelCache
from tests.bot.dispatch.helpers import imagine_job, record, usage

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


async def test_jobs_that_cannot_be_resumed_are_failed_and_the_user_told(dispatcher, session_factory):
    queued, running = await crashed_jobs(session_factory)
    notified = []

    async def notify(row, text):
        notified.append((row.job_id, row.channel_id, text))

    report = await recover_unfinished(session_factory, dispatcher, notify)  # front end cannot follow jobs
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
