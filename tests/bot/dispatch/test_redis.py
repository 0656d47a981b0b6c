"""Redis Streams transport against a real redis-server started by the tests, with the demo engine and SQLite.

The in-process tests run a `RedisWorker` as a task next to one or two `RedisDispatcher`s (two bots);
`test_sigkilled_worker_job_completes_on_the_other` runs two real `python -m bot.worker` processes.
More: `test_redis_worker.py` (what the worker takes and gives back), `test_redis_recovery.py` (restarts).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.dispatch.redis_streams import RedisDispatcher
from bot.jobs import (
    EncodeResult,
    ImagineResult,
    JobDone,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    QueueFullError,
    UserJobLimitError,
)
from bot.protocol.streams import GROUP, RedisKeys
from stylecodes.versions import UnservedVersionError
from tests.bot.conftest import free_port
from tests.bot.dispatch.helpers import (
    done_count,
    encode_job,
    imagine_job,
    named_style,
    record,
    redis_limits,
    running_worker,
    taken_by_a_dead_worker,
    usage,
    use_count,
    wait_for,
)

pytestmark = pytest.mark.redis

ALICE, BOB, CAROL = 11, 22, 33
PROJECT_ROOT = Path(__file__).resolve().parents[3]


async def test_imagine_and_encode_through_redis(bots, redis_client, keys, demo_engine, session_factory):
    bot = await bots()
    job = imagine_job(ALICE, count=2, steps=4)
    await record(session_factory, job)
    handle = await bot.submit(job)
    encode = await bot.submit(encode_job(BOB))
    assert (handle.position, encode.position) == (1, 2)
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        events = [event async for event in handle.events()]
        encoded = await encode.result()

    assert isinstance(events[0], JobQueued) and events[0].position == 1
    assert isinstance(events[1], JobStarted)
    assert [e.step for e in events if isinstance(e, JobProgress)] == [1, 2, 3]
    assert all(e.preview_png.startswith(b"\x89PNG") for e in events if isinstance(e, JobProgress))
    done = events[-1]
    assert isinstance(done, JobDone) and isinstance(done.payload, ImagineResult)
    assert len(done.payload.images_png) == 2
    assert isinstance(encoded, JobDone) and isinstance(encoded.payload, EncodeResult)
    assert encoded.payload.codes[0].version == 0

    row = await usage(session_factory, job.job_id)
    assert row.status == "done" and row.started_at is not None and row.finished_at is not None
    # Acked and released: nothing pending, no limit slot held, the stream entries gone.
    assert (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 0
    assert await redis_client.scard(keys.active) == 0
    assert await redis_client.scard(keys.user(ALICE)) == 0
    assert await redis_client.xlen(keys.stream(0)) == 0
    # A late listener (a restarted bot) still reads the stored result.
    late = await bot.resume(job.job_id)
    assert isinstance(await late.result(), JobDone)


async def test_a_waiting_jobs_follower_is_told_its_new_queue_position(
    bots, redis_client, keys, demo_engine, session_factory
):
    bot = await bots()
    jobs = [imagine_job(user, seed=user, steps=2) for user in (ALICE, BOB, CAROL)]
    handles = []
    for job in jobs:
        await record(session_factory, job)
        handles.append(await bot.submit(job))
    assert [h.position for h in handles] == [1, 2, 3]
    options = {"limits": redis_limits(max_batch_size=1), "step_delay_s": 0.4}  # about a second per job
    async with running_worker(redis_client, keys, demo_engine, session_factory, **options):
        events = await asyncio.wait_for(asyncio.gather(*(_events(h) for h in handles)), 60)
    positions = [[e.position for e in job_events if isinstance(e, JobQueued)] for job_events in events]
    assert positions == [[1], [2, 1], [3, 2, 1]]
    assert all(isinstance(job_events[-1], JobDone) for job_events in events)


async def _events(handle) -> list:
    return [event async for event in handle.events()]


async def test_limits_hold_across_bot_processes(bots):
    first_bot, second_bot = await bots(max_jobs_per_user=2, queue_cap=3), await bots(max_jobs_per_user=2, queue_cap=3)
    await first_bot.submit(encode_job(ALICE))
    await second_bot.submit(encode_job(ALICE))
    with pytest.raises(UserJobLimitError, match="You already have 2 jobs"):
        await first_bot.submit(encode_job(ALICE))
    third = await second_bot.submit(encode_job(BOB))
    assert third.position == 3
    with pytest.raises(QueueFullError, match="try again in a minute"):
        await first_bot.submit(encode_job(CAROL))
    job = encode_job(CAROL)
    job.version = 1
    with pytest.raises(UnservedVersionError):
        await first_bot.submit(job)


async def test_concurrent_submits_never_exceed_the_cap(bots, redis_client, keys):
    bot_a, bot_b = await bots(queue_cap=10), await bots(queue_cap=10)
    jobs = [encode_job(user) for user in range(100, 140)]
    outcomes = await asyncio.gather(
        *[(bot_a if i % 2 else bot_b).submit(job) for i, job in enumerate(jobs)], return_exceptions=True
    )
    accepted = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(accepted) == 10
    assert all(isinstance(o, QueueFullError) for o in outcomes if isinstance(o, Exception))
    assert sorted(h.position for h in accepted) == list(range(1, 11))
    assert await redis_client.scard(keys.active) == 10


async def test_delivery_limit_fails_the_job_with_reason(bots, redis_client, keys, demo_engine, session_factory):
    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    await taken_by_a_dead_worker(redis_client, keys)  # delivered once, never acked
    async with running_worker(
        redis_client, keys, demo_engine, session_factory, idle_timeout_s=0.2, max_deliveries=1
    ) as worker:
        result = await asyncio.wait_for(handle.result(), timeout=20)
    assert isinstance(result, JobFailed)
    assert result.code == JobFailed.DELIVERY_LIMIT
    assert "given up" in result.reason
    row = await usage(session_factory, job.job_id)
    assert row.status == "failed" and row.error == result.reason
    assert worker.batches_run == 0  # the engine never ran it
    assert await redis_client.scard(keys.active) == 0
    assert (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 0


async def test_reclaimed_job_already_stored_as_done_is_run_again_for_its_images_and_counted_once(
    bots, redis_client, keys, demo_engine, session_factory
):
    """A worker stored the result and died before publishing it: nothing holds the images but the request.

    The next delivery runs it again, so the user gets their images; storing it again changes nothing: one
    `done` row, one use of the style.
    """
    from registry.usage import set_usage_status

    bot = await bots()
    job = imagine_job(ALICE)
    revision = await named_style(session_factory, job)
    await record(session_factory, job, revision_id=revision.id)
    handle = await bot.submit(job)
    await taken_by_a_dead_worker(redis_client, keys)
    async with session_factory() as session:  # what the dead worker had stored
        await set_usage_status(session, job.job_id, "running")
        await set_usage_status(session, job.job_id, "done")
    assert await use_count(session_factory, revision.style_id) == 1
    async with running_worker(redis_client, keys, demo_engine, session_factory, idle_timeout_s=0.2) as worker:
        result = await asyncio.wait_for(handle.result(), timeout=20)
    assert isinstance(result, JobDone) and isinstance(result.payload, ImagineResult)
    assert [m["seed"] for m in result.payload.metadata] == [r.seed for r in job.requests]
    assert worker.batches_run == 1
    assert await done_count(session_factory, job.job_id) == 1
    assert await use_count(session_factory, revision.style_id) == 1
    assert (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 0
    assert await redis_client.scard(keys.active) == 0


async def test_reclaimed_job_already_stored_as_failed_tells_the_stored_reason_and_is_not_run(
    bots, redis_client, keys, demo_engine, session_factory
):
    from registry.usage import set_usage_status

    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    await taken_by_a_dead_worker(redis_client, keys)
    async with session_factory() as session:
        await set_usage_status(session, job.job_id, "failed", error="The model failed on this job (OOM).")
    async with running_worker(redis_client, keys, demo_engine, session_factory, idle_timeout_s=0.2) as worker:
        told = await asyncio.wait_for(handle.result(), timeout=20)
    assert isinstance(told, JobFailed) and told.reason == "The model failed on this job (OOM)."
    assert worker.batches_run == 0
    assert (await usage(session_factory, job.job_id)).status == "failed"
    assert (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 0
    assert await redis_client.scard(keys.user(ALICE)) == 0


async def test_a_slow_job_is_not_taken_from_a_live_worker(bots, redis_client, keys, demo_engine, session_factory):
    """The heartbeat keeps a long job with its worker, although it runs longer than the idle timeout."""
    bot = await bots()
    job = imagine_job(ALICE, steps=12)
    await record(session_factory, job)
    handle = await bot.submit(job)
    options = {"idle_timeout_s": 1.0, "step_delay_s": 0.25}  # the job takes > 3 s, 3x the timeout
    async with running_worker(redis_client, keys, demo_engine, session_factory, **options) as first:
        await wait_for(lambda: redis_client.hget(keys.job(job.job_id), "worker"), 20, "the job to start")
        async with running_worker(redis_client, keys, demo_engine, session_factory, **options) as second:
            result = await asyncio.wait_for(handle.result(), timeout=30)
    assert isinstance(result, JobDone)
    events = [event async for event in (await bot.resume(job.job_id)).events()]
    assert sum(isinstance(e, JobStarted) for e in events) == 1
    assert (first.batches_run, second.batches_run) == (1, 0)
    assert await done_count(session_factory, job.job_id) == 1


# --- Two real worker processes, one killed ---------------------------------------------------------------


def start_worker(redis_url: str, registry_url: str, log_path: Path, metrics_port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "STYLECODES_REDIS_URL": redis_url,
        "STYLECODES_DATABASE_URL": registry_url,
        "STYLECODES_MODEL_VERSION": "0",
        "STYLECODES_SERVED_VERSIONS": "0",
        "STYLECODES_JOB_IDLE_TIMEOUT_S": "1.5",
        "STYLECODES_MAX_DELIVERIES": "3",
        "STYLECODES_TEST_STEP_DELAY_S": "0.1",  # 20 steps x 0.1 s: time to kill it mid-job
        "STYLECODES_LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        # Two workers and the test share a small CPU: spinning OpenMP threads would slow everyone 10x.
        "OMP_NUM_THREADS": "1",
    }
    env["STYLECODES_METRICS_PORT"] = str(metrics_port)
    log_file = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bot.worker"], cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )


async def test_sigkilled_worker_job_completes_on_the_other(redis_server, registry_url, session_factory, tmp_path):
    from redis.asyncio import Redis

    # Processes use the default key prefix, so they get a database of their own on the shared server.
    redis_url = redis_server.database_url(7)
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushdb()
    keys = RedisKeys()
    ports = [free_port(), free_port()]
    workers = [start_worker(redis_url, registry_url, tmp_path / f"worker{i}.log", ports[i]) for i in range(2)]
    bot = RedisDispatcher(redis=redis, limits=redis_limits(), poll_block_ms=200)
    try:

        async def both_joined():
            if any(w.poll() is not None for w in workers):
                logs = "\n".join((tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(2))
                raise AssertionError(f"a worker exited early:\n{logs}")
            if not await redis.exists(keys.stream(0)):
                return False
            return len(await redis.xinfo_consumers(keys.stream(0), GROUP)) == 2

        await wait_for(both_joined, 60, "both workers to join the consumer group")

        job = imagine_job(ALICE, steps=20)
        revision = await named_style(session_factory, job)  # a second `done` would count a second use
        await record(session_factory, job, revision_id=revision.id)
        handle = await bot.submit(job)

        async def running_on():
            return await redis.hget(keys.job(job.job_id), "worker")

        first_worker = await wait_for(running_on, 30, "a worker to start the job")
        victim = next(w for w in workers if w.pid == int(first_worker.split(":")[1]))
        await wait_for(
            lambda: _has_progress(redis, keys, job.job_id), 30, "the first worker to be in the middle of the job"
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)

        result = await asyncio.wait_for(handle.result(), timeout=60)
        assert isinstance(result, JobDone), result
        events = [event async for event in (await bot.resume(job.job_id)).events()]
        assert sum(isinstance(e, JobStarted) for e in events) == 2  # started on the victim, then on the survivor
        assert sum(isinstance(e, JobDone) for e in events) == 1
        finished_on = await redis.hget(keys.job(job.job_id), "worker")
        assert finished_on != first_worker
        assert await done_count(session_factory, job.job_id) == 1  # exactly once `done` in the usage history
        assert await use_count(session_factory, revision.style_id) == 1  # and counted once
        row = await usage(session_factory, job.job_id)
        assert row.status == "done" and row.error is None
        assert (await redis.xpending(keys.stream(0), GROUP))["pending"] == 0
        assert await redis.scard(keys.active) == 0

        # The survivor's own /healthz and /metrics tell the story too.
        survivor_port = ports[[w.pid for w in workers].index(int(finished_on.split(":")[1]))]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{survivor_port}/healthz") as response:
                health = await response.json()
            async with http.get(f"http://127.0.0.1:{survivor_port}/metrics") as response:
                exposition = await response.text()
        assert response.status == 200
        assert health["ok"] is True and health["consumer"] == finished_on and health["batches_run"] == 1
        assert 'stylecodes_jobs_reclaimed_total{version="0"} 1.0' in exposition
        assert 'stylecodes_jobs_finished_total{kind="imagine",outcome="done"} 1.0' in exposition
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        await redis.flushdb()
        await redis.aclose()


async def _has_progress(redis, keys: RedisKeys, job_id: str) -> bool:
    entries = await redis.xrange(keys.events(job_id))
    return any('"progress"' in fields["event"] for _, fields in entries)
