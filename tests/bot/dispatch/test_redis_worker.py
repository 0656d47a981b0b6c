"""The Redis worker against a real redis-server: what it takes, runs, gives back, and fails with a reason.

Workers run as tasks in this process, each with its own engine thread; jobs use the demo model (version 0).
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from bot import metrics
from bot.jobs import (
    EncodeJob,
    JobDone,
    JobFailed,
    NoWorkerError,
    PreviewJob,
    QueueFullError,
    UserJobLimitError,
    new_job_id,
)
from bot.protocol.streams import GROUP
from tests.bot.dispatch.helpers import (
    RecordingEngine,
    done_count,
    encode_job,
    imagine_job,
    job_events,
    mark_live,
    record,
    redis_limits,
    running_worker,
    taken_by_a_dead_worker,
    usage,
    wait_for,
)

pytestmark = pytest.mark.redis

ALICE, BOB, CAROL = 11, 22, 33


@pytest.fixture(scope="module")
def other_demo_engine():
    """A second demo engine: two workers in one process must not share one (an engine runs one call at a time)."""
    from stylecodes.engine import StyleEngine

    return StyleEngine.load(0, device="cpu")


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def released(redis, keys, user_id: int) -> bool:
    """Nothing left of the user's jobs: no slot, no pending entry, no entry waiting in the stream."""
    groups = await redis.xinfo_groups(keys.stream(0)) if await redis.exists(keys.stream(0)) else []
    return (
        await redis.scard(keys.active) == 0
        and await redis.scard(keys.user(user_id)) == 0
        and await redis.zcard(keys.waiting(0)) == 0
        and sum(group["pending"] for group in groups) == 0
        and await redis.xlen(keys.stream(0)) == 0
    )


# --- Routing and batching --------------------------------------------------------------------------------


async def test_the_version_digit_routes_the_job_to_a_worker_serving_it(
    bots, redis_client, keys, demo_engine, other_demo_engine, session_factory
):
    bot = await bots(served_versions=(0, 1))
    await mark_live(redis_client, keys, (1,))
    v1_job = EncodeJob(new_job_id(), ALICE, 1, encode_job(ALICE).image)
    v1_handle = await bot.submit(v1_job)
    v0_handle = await bot.submit(encode_job(BOB))
    v0_engine, v1_engine = RecordingEngine(demo_engine), RecordingEngine(other_demo_engine)
    v0_limits = redis_limits(served_versions=(0,))
    async with running_worker(redis_client, keys, v0_engine, session_factory, limits=v0_limits) as v0:
        assert isinstance(await asyncio.wait_for(v0_handle.result(), 20), JobDone)
        await asyncio.sleep(0.5)  # time enough to take the other job too, if it could
        assert await redis_client.hget(keys.job(v1_job.job_id), "state") == "queued"
        assert v0_engine.encode_calls == [1]
        assert await redis_client.xlen(keys.stream(1)) == 1  # untouched, waiting for a version-1 worker
        v1_limits = redis_limits(served_versions=(1,))
        async with running_worker(redis_client, keys, v1_engine, session_factory, limits=v1_limits) as v1:
            assert isinstance(await asyncio.wait_for(v1_handle.result(), 20), JobDone)
    assert v1_engine.encode_calls == [1]
    assert await redis_client.hget(keys.job(v1_job.job_id), "worker") == v1.consumer
    assert v0.batches_run == 1


async def test_compatible_jobs_of_different_users_run_as_one_batch(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots(max_batch_size=4)
    jobs = [imagine_job(user, seed=10 * user, prompt=f"user {user}") for user in (ALICE, BOB, CAROL)]
    handles = []
    for job in jobs:
        await record(session_factory, job)
        handles.append(await bot.submit(job))
    engine = RecordingEngine(demo_engine)
    async with running_worker(redis_client, keys, engine, session_factory) as worker:
        results = [await asyncio.wait_for(handle.result(), 20) for handle in handles]
    assert all(isinstance(result, JobDone) for result in results)
    assert [len(call) for call in engine.generate_calls] == [3]  # one engine call for the three users
    assert [r.prompt for r in engine.generate_calls[0]] == [j.requests[0].prompt for j in jobs]
    for job, result in zip(jobs, results, strict=True):  # each got its own image back
        assert result.payload.metadata[0]["seed"] == job.requests[0].seed
        assert (await usage(session_factory, job.job_id)).status == "done"
    assert worker.batches_run == 1


async def test_a_busy_worker_gives_back_what_does_not_fit_and_an_idle_one_runs_it(
    bots, redis_client, keys, demo_engine, other_demo_engine, session_factory
):
    """The probe: two incompatible jobs, two workers. They run at the same time, one on each worker."""
    bot = await bots(max_batch_size=4)
    ten, eleven = imagine_job(ALICE, steps=10), imagine_job(BOB, steps=11)
    handles = []
    for job in (ten, eleven):
        await record(session_factory, job)
        handles.append(await bot.submit(job))
    options = {"step_delay_s": 0.15}  # about 1.5 s each
    async with running_worker(redis_client, keys, demo_engine, session_factory, **options) as first:
        # The first worker reads both (one read), starts the older and must not keep the other.
        await wait_for(lambda: redis_client.hget(keys.job(ten.job_id), "worker"), 20, "the first job to start")
        async with running_worker(redis_client, keys, other_demo_engine, session_factory, **options) as second:
            results = [await asyncio.wait_for(handle.result(), 30) for handle in handles]
    assert all(isinstance(result, JobDone) for result in results)
    ran_on = [await redis_client.hget(keys.job(job.job_id), "worker") for job in (ten, eleven)]
    assert ran_on == [first.consumer, second.consumer]
    (ten_started,) = [t for t, e in await job_events(redis_client, keys, ten.job_id) if e["kind"] == "started"]
    (ten_done,) = [t for t, e in await job_events(redis_client, keys, ten.job_id) if e["kind"] == "done"]
    (eleven_started,) = [t for t, e in await job_events(redis_client, keys, eleven.job_id) if e["kind"] == "started"]
    assert ten_started <= eleven_started < ten_done  # at the same time, not one after the other
    assert (first.batches_run, second.batches_run) == (1, 1)
    assert await released(redis_client, keys, ALICE) and await released(redis_client, keys, BOB)
    assert await redis_client.xlen(keys.returned(0)) == 0  # the given-back copy was acked and deleted too


# --- At-least-once, exactly-once `done` --------------------------------------------------------------------


async def test_when_storing_fails_the_entry_stays_pending_and_the_redelivery_finishes_it(
    bots, redis_client, keys, demo_engine, session_factory, monkeypatch
):
    """XACK only after the result is stored: a database error leaves the job pending, and it is redone."""
    from bot.worker.runner import BatchRunner

    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    real_store, failures = BatchRunner.store, []

    async def store_failing_once(self, outcome):
        if not failures:
            failures.append(outcome.job.job_id)
            raise ConnectionError("database is restarting")
        await real_store(self, outcome)

    monkeypatch.setattr(BatchRunner, "store", store_failing_once)
    async with running_worker(redis_client, keys, demo_engine, session_factory, idle_timeout_s=1.0) as worker:
        await wait_for(lambda: _true(failures), 20, "the first store to fail")
        # Not acked, not published: still pending, still holding Alice's slot, nothing told to the listener.
        assert (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 1
        assert await redis_client.sismember(keys.user(ALICE), job.job_id)
        assert not any(e["kind"] in ("done", "failed") for _, e in await job_events(redis_client, keys, job.job_id))
        result = await asyncio.wait_for(handle.result(), 20)  # redelivered after the idle timeout, and done
    assert isinstance(result, JobDone)
    assert worker.batches_run == 2
    started = [e for _, e in await job_events(redis_client, keys, job.job_id) if e["kind"] == "started"]
    assert len(started) == 2
    assert await done_count(session_factory, job.job_id) == 1
    assert await released(redis_client, keys, ALICE)


async def test_a_second_entry_of_a_running_job_neither_fails_it_nor_runs_it_twice(
    bots, redis_client, keys, demo_engine, session_factory
):
    """Own-job check before the delivery limit: a copy of the job with many deliveries must not fail it mid-run."""
    bot = await bots()
    job = imagine_job(ALICE, steps=4)
    await record(session_factory, job)
    handle = await bot.submit(job)
    [(_, fields)] = await redis_client.xrange(keys.stream(0))
    await redis_client.xadd(keys.stream(0), {**fields, "deliveries": "5"})  # a copy, "delivered" 5 times already
    async with running_worker(
        redis_client, keys, demo_engine, session_factory, idle_timeout_s=0.5, max_deliveries=3
    ) as worker:
        result = await asyncio.wait_for(handle.result(), 20)
        # The copy (pending on this worker, not held) is reclaimed later and dropped: the job ended.
        await wait_for(lambda: released(redis_client, keys, ALICE), 20, "the copy to be dropped")
    assert isinstance(result, JobDone)
    kinds = [e["kind"] for _, e in await job_events(redis_client, keys, job.job_id)]
    assert kinds.count("done") == 1 and "failed" not in kinds
    assert worker.batches_run == 1
    assert (await usage(session_factory, job.job_id)).status == "done"


async def _true(value) -> bool:
    return bool(value)


# --- Entries that cannot run -------------------------------------------------------------------------------


async def test_a_job_of_an_unknown_kind_is_failed_with_the_reason_and_its_slot_released(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    data = job.to_dict()
    job.to_dict = lambda: {**data, "kind": "paint"}  # what an older or newer bot might queue
    handle = await bot.submit(job)
    async with running_worker(redis_client, keys, demo_engine, session_factory) as worker:
        result = await asyncio.wait_for(handle.result(), 20)
        follow_up = imagine_job(ALICE)  # the slot is Alice's again
        await record(session_factory, follow_up)
        assert isinstance(await asyncio.wait_for((await bot.submit(follow_up)).result(), 20), JobDone)
    assert isinstance(result, JobFailed) and result.code == JobFailed.BAD_INPUT
    assert "could not read this job" in result.reason and "unknown job kind 'paint'" in result.reason
    row = await usage(session_factory, job.job_id)
    assert row.status == "failed" and row.error == result.reason
    assert worker.batches_run == 1  # the follow-up only
    assert await released(redis_client, keys, ALICE)


async def test_a_garbled_entry_whose_job_id_is_readable_fails_its_job(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    [(entry_id, fields)] = await redis_client.xrange(keys.stream(0))
    await redis_client.xdel(keys.stream(0), entry_id)  # replaced by a damaged copy
    await redis_client.xadd(keys.stream(0), {**fields, "job": fields["job"][:40]})
    async with running_worker(redis_client, keys, demo_engine, session_factory) as worker:
        result = await asyncio.wait_for(handle.result(), 20)
    assert isinstance(result, JobFailed) and result.code == JobFailed.BAD_INPUT
    assert "JSONDecodeError" in result.reason
    assert (await usage(session_factory, job.job_id)).status == "failed"
    assert worker.batches_run == 0
    assert await released(redis_client, keys, ALICE)


async def test_an_entry_with_nothing_readable_is_dropped_and_the_worker_goes_on(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots()
    await redis_client.xadd(keys.stream(0), {"foo": "bar"})
    await redis_client.xadd(keys.stream(0), {"job": "[1, 2]"})
    handle = await bot.submit(encode_job(BOB))
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        assert isinstance(await asyncio.wait_for(handle.result(), 20), JobDone)
    assert await released(redis_client, keys, BOB)


async def test_a_pending_entry_deleted_from_its_stream_fails_its_job(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    entry_id = await taken_by_a_dead_worker(redis_client, keys)
    await redis_client.xdel(keys.stream(0), entry_id)  # an operator's XDEL, or a trim
    async with running_worker(redis_client, keys, demo_engine, session_factory, idle_timeout_s=0.2):
        result = await asyncio.wait_for(handle.result(), 20)
    assert isinstance(result, JobFailed) and result.code == JobFailed.BAD_INPUT
    assert "deleted" in result.reason
    assert (await usage(session_factory, job.job_id)).status == "failed"
    assert await released(redis_client, keys, ALICE)


async def test_ids_whose_job_record_expired_hold_no_slot(bots, redis_client, keys):
    bot = await bots(queue_cap=1, max_jobs_per_user=1)
    await redis_client.sadd(keys.active, "f" * 32)  # jobs whose records expired (TTL) without finishing
    await redis_client.sadd(keys.user(ALICE), "e" * 32)
    handle = await bot.submit(encode_job(ALICE))
    assert handle.position == 1
    assert await redis_client.smembers(keys.active) == {handle.job_id}
    assert await redis_client.smembers(keys.user(ALICE)) == {handle.job_id}
    with pytest.raises(QueueFullError):  # a live job still counts
        await bot.submit(encode_job(BOB))


# --- No live worker --------------------------------------------------------------------------------------


async def test_submit_refuses_a_version_no_live_worker_serves(bots, redis_client, keys, demo_engine, session_factory):
    bot = await bots(standby=False)
    before = sample("stylecodes_jobs_rejected_total", reason="no_worker")
    with pytest.raises(NoWorkerError, match="No worker for model version 0 is running right now"):
        await bot.submit(encode_job(ALICE))
    assert sample("stylecodes_jobs_rejected_total", reason="no_worker") == before + 1
    assert await redis_client.scard(keys.active) == 0 and not await redis_client.exists(keys.stream(0))
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        assert isinstance(await asyncio.wait_for((await bot.submit(encode_job(ALICE))).result(), 20), JobDone)
    with pytest.raises(NoWorkerError):  # a worker that stops says so at once
        await bot.submit(encode_job(ALICE))


async def test_a_job_queued_too_long_with_no_live_worker_is_failed_with_the_reason(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots(session_factory=session_factory, max_queue_wait_s=0.3, sweep_interval_s=0.1)
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    await asyncio.sleep(0.8)  # past the limit, but a worker is live (busy, or loading): it keeps its place
    assert await redis_client.hget(keys.job(job.job_id), "state") == "queued"
    await redis_client.zrem(keys.workers(0), "standby")  # the last worker is gone
    result = await asyncio.wait_for(handle.result(), 10)
    assert isinstance(result, JobFailed) and result.code == JobFailed.NO_WORKER
    assert "No worker for model version 0" in result.reason and "given up" in result.reason
    row = await usage(session_factory, job.job_id)
    assert row.status == "failed" and row.error == result.reason
    assert await released(redis_client, keys, ALICE)
    async with running_worker(redis_client, keys, demo_engine, session_factory) as worker:  # a worker comes back
        await asyncio.sleep(0.5)
    assert worker.batches_run == 0  # nothing left to run


# --- Per-user limit and previews ---------------------------------------------------------------------------


async def test_a_preview_does_not_take_one_of_the_users_job_slots_but_counts_toward_the_cap(bots):
    from stylecodes.codec import random_code

    bot = await bots(max_jobs_per_user=2, queue_cap=4)
    await bot.submit(imagine_job(ALICE))  # running, say
    preview = PreviewJob(new_job_id(), ALICE, revision_id=1, code=random_code(0).canonical)
    await bot.submit(preview)  # Alice saved a style: the bot renders its preview
    second = await bot.submit(imagine_job(ALICE))  # still her second job
    assert second.position == 3
    with pytest.raises(UserJobLimitError, match="You already have 2 jobs"):
        await bot.submit(imagine_job(ALICE))
    await bot.submit(imagine_job(BOB))
    with pytest.raises(QueueFullError):  # the preview holds one of the four places
        await bot.submit(imagine_job(CAROL))


# --- Metrics -----------------------------------------------------------------------------------------------


async def test_queue_depth_is_fresh_on_submit_and_during_a_long_batch(
    bots, redis_client, keys, demo_engine, session_factory
):
    gauge = metrics.QUEUE_DEPTH.labels("0")
    bot = await bots()
    long_job, waiting = imagine_job(ALICE, steps=12), imagine_job(BOB, steps=3)
    for job in (long_job, waiting):
        await record(session_factory, job)
    long_handle = await bot.submit(long_job)
    assert sample("stylecodes_queue_depth", version="0") == 1  # the bot's own gauge, on submit
    options = {"idle_timeout_s": 2.0, "step_delay_s": 0.25}  # ticks every 0.5 s; the long job takes 3 s
    async with running_worker(redis_client, keys, demo_engine, session_factory, **options):
        await wait_for(lambda: redis_client.hget(keys.job(long_job.job_id), "worker"), 20, "the long job to start")
        await bot.submit(waiting)
        gauge.set(99)  # stale: only the worker's tick can put it right while the batch runs
        await wait_for(lambda: _is(sample("stylecodes_queue_depth", version="0"), 1), 5, "the worker's tick")
        assert await redis_client.hget(keys.job(long_job.job_id), "state") == "running"  # mid-batch
        assert isinstance(await asyncio.wait_for(long_handle.result(), 20), JobDone)


async def _is(value, expected) -> bool:
    return value == expected


async def test_the_bot_records_each_jobs_latency_once(bots, redis_client, keys, demo_engine, session_factory):
    labels = {"kind": "imagine", "version": "0", "outcome": "done"}
    before = sample("stylecodes_job_latency_seconds_count", **labels)
    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        assert isinstance(await asyncio.wait_for(handle.result(), 20), JobDone)
    assert sample("stylecodes_job_latency_seconds_count", **labels) == before + 1
    assert isinstance(await (await bot.resume(job.job_id)).result(), JobDone)  # a listener replaying it
    assert sample("stylecodes_job_latency_seconds_count", **labels) == before + 1
    assert await redis_client.get(keys.follower(job.job_id)) == "delivered"
