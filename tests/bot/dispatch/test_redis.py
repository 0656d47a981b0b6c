"""Redis Streams transport against a real redis-server started by the tests, with the demo engine and SQLite.

The in-process tests run a `RedisWorker` as a task next to one or two `RedisDispatcher`s (two bots);
`test_sigkilled_worker_job_completes_on_the_other` runs two real `python -m bot.worker` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bot.dispatch.base import DispatchLimits
from bot.dispatch.redis_streams import GROUP, RedisDispatcher, RedisKeys
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
from bot.worker.models import ModelCache
from bot.worker.redis_worker import RedisWorker
from stylecodes.versions import UnservedVersionError
from tests.bot.conftest import free_port
from tests.bot.dispatch.helpers import done_count, encode_job, imagine_job, record, usage

pytestmark = pytest.mark.redis

ALICE, BOB, CAROL = 11, 22, 33
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def limits(**overrides) -> DispatchLimits:
    return DispatchLimits(**{"served_versions": (0,), "progress_interval_s": 0.0, **overrides})


@pytest.fixture
def keys(redis_prefix) -> RedisKeys:
    return RedisKeys(redis_prefix)


@pytest.fixture
async def bots(redis_server, keys):
    """Factory of bot-side dispatchers (each its own connection, as separate bot processes would have)."""
    made = []

    async def make(**overrides) -> RedisDispatcher:
        dispatcher = RedisDispatcher.from_url(
            redis_server.url, limits=limits(**overrides), keys=keys, poll_block_ms=200
        )
        await dispatcher.start()
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.close()


@contextlib.asynccontextmanager
async def running_worker(redis_client, keys, demo_engine, session_factory, **options):
    worker = RedisWorker(
        redis=redis_client,
        limits=limits(),
        models=ModelCache(lambda version: demo_engine),
        session_factory=session_factory,
        keys=keys,
        read_block_ms=100,
        **options,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


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
    # A worker that takes the job and dies before acking it: delivered once, never acked.
    await redis_client.xgroup_create(keys.stream(0), GROUP, id="0", mkstream=True)
    taken = await redis_client.xreadgroup(GROUP, "dead-worker", {keys.stream(0): ">"}, count=1)
    assert len(taken[0][1]) == 1
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


async def test_reclaimed_job_that_was_already_done_is_not_run_again(
    bots, redis_client, keys, demo_engine, session_factory
):
    """A worker stored the result and died before its XACK: the next delivery must not make a second result."""
    from registry.usage import set_usage_status

    bot = await bots()
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await bot.submit(job)
    await redis_client.xgroup_create(keys.stream(0), GROUP, id="0", mkstream=True)
    await redis_client.xreadgroup(GROUP, "dead-worker", {keys.stream(0): ">"}, count=1)
    async with session_factory() as session:  # what the dead worker had stored
        await set_usage_status(session, job.job_id, "running")
        await set_usage_status(session, job.job_id, "done")
    async with running_worker(redis_client, keys, demo_engine, session_factory, idle_timeout_s=0.2) as worker:
        for _ in range(200):
            if (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 0:
                break
            await asyncio.sleep(0.05)
    assert (await redis_client.xpending(keys.stream(0), GROUP))["pending"] == 0
    assert worker.batches_run == 0
    assert await done_count(session_factory, job.job_id) == 1
    told = await asyncio.wait_for(handle.result(), timeout=10)  # the listener is not left waiting forever
    assert isinstance(told, JobFailed) and told.code == JobFailed.LOST and "run it again" in told.reason


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


async def wait_for(predicate, within_s: float, what: str):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


async def test_sigkilled_worker_job_completes_on_the_other(redis_server, registry_url, session_factory, tmp_path):
    from redis.asyncio import Redis

    # Processes use the default key prefix, so they get a database of their own on the shared server.
    redis_url = f"redis://127.0.0.1:{redis_server.port}/7"
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushdb()
    keys = RedisKeys()
    ports = [free_port(), free_port()]
    workers = [start_worker(redis_url, registry_url, tmp_path / f"worker{i}.log", ports[i]) for i in range(2)]
    bot = RedisDispatcher(redis=redis, limits=limits(), poll_block_ms=200)
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
        await record(session_factory, job)
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
