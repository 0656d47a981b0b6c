"""Restart recovery over Redis: a restarted bot re-attaches to jobs Redis still has, and two bot processes
never post one result twice (each job has one follower, a lease in Redis)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from bot.dispatch.recovery import recover_unfinished
from bot.jobs import JobDone, JobQueued
from tests.bot.dispatch.helpers import imagine_job, record, running_worker, usage, wait_for

pytestmark = pytest.mark.redis

ALICE = 11


class Front:
    """What the front end (`bot.frontend.actions.restarts`) gives recovery: who was told what, and the
    handles it follows."""

    def __init__(self) -> None:
        self.resumed: dict[str, object] = {}
        self.notified: list[tuple[str, str]] = []

    async def on_resumed(self, row, handle) -> None:
        assert row.job_id not in self.resumed, "resumed twice"
        self.resumed[row.job_id] = handle

    async def notify(self, row, text: str) -> None:
        self.notified.append((row.job_id, text))


def latency_count() -> float:
    labels = {"kind": "imagine", "version": "0", "outcome": "done"}
    return REGISTRY.get_sample_value("stylecodes_job_latency_seconds_count", labels) or 0.0


async def test_a_job_redis_still_has_is_reattached_once_the_crashed_bots_lease_runs_out(
    bots, redis_client, keys, demo_engine, session_factory
):
    crashed = await bots(follower_ttl_s=0.6)
    job = imagine_job(ALICE)
    await record(session_factory, job)
    await crashed.submit(job)  # and the process dies: nobody follows the job any more
    await crashed.redis.aclose()
    restarted, front = await bots(follower_ttl_s=0.6), Front()
    report = await asyncio.wait_for(
        recover_unfinished(session_factory, restarted, front.notify, on_resumed=front.on_resumed), 10
    )
    assert report.reattached == [job.job_id]
    assert report.resubmitted == report.failed == report.followed_elsewhere == [] and front.notified == []
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        events = [event async for event in front.resumed[job.job_id].events()]
    assert isinstance(events[0], JobQueued)  # replayed from the first event
    assert isinstance(events[-1], JobDone)
    assert (await usage(session_factory, job.job_id)).status == "done"


async def test_a_job_a_live_bot_follows_is_left_to_it_and_its_result_posted_once(
    bots, redis_client, keys, demo_engine, session_factory
):
    """Rolling restart: the new process starts while the old one, on the same shards, still follows the job."""
    old = await bots()
    job = imagine_job(ALICE, steps=4)
    await record(session_factory, job)
    following = asyncio.create_task((await old.submit(job)).result())
    new, front = await bots(follower_ttl_s=0.6), Front()
    recovery = asyncio.create_task(recover_unfinished(session_factory, new, front.notify, on_resumed=front.on_resumed))
    await asyncio.sleep(0.5)  # it asked, and waits: the old process is alive
    assert not recovery.done()
    before = latency_count()
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        assert isinstance(await asyncio.wait_for(following, 20), JobDone)
    report = await asyncio.wait_for(recovery, 10)
    assert report.followed_elsewhere == [job.job_id]
    assert report.reattached == report.resubmitted == report.failed == []
    assert front.resumed == {} and front.notified == []  # the new process posts nothing
    assert latency_count() == before + 1


async def test_a_follower_that_stops_before_the_end_hands_the_job_to_the_waiting_recovery(
    bots, redis_client, keys, demo_engine, session_factory
):
    old = await bots()  # its lease would last 30 s, but it gives it up when it stops following
    job = imagine_job(ALICE)
    await record(session_factory, job)
    handle = await old.submit(job)
    seen = []

    async def follow():
        async for event in handle.events():
            seen.append(event)

    following = asyncio.create_task(follow())
    await wait_for(lambda: _truthy(seen), 5, "the old process to follow the job")
    new, front = await bots(follower_ttl_s=0.6), Front()
    recovery = asyncio.create_task(recover_unfinished(session_factory, new, front.notify, on_resumed=front.on_resumed))
    await asyncio.sleep(0.3)
    assert not recovery.done()
    following.cancel()  # the old process shuts down
    report = await asyncio.wait_for(recovery, 5)
    assert report.reattached == [job.job_id]
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        assert isinstance(await asyncio.wait_for(front.resumed[job.job_id].result(), 20), JobDone)


async def test_a_result_that_arrived_while_no_bot_followed_is_replayed_from_redis(
    bots, redis_client, keys, demo_engine, session_factory
):
    """The bot was down while the worker finished: the row is `done` but was never posted, and Redis still has
    the result. Recovery re-attaches to it (nothing is run again)."""
    crashed = await bots(follower_ttl_s=0.6)
    job = imagine_job(ALICE, seed=21)
    await record(session_factory, job)
    await crashed.submit(job)
    await crashed.redis.aclose()  # the bot process dies; the worker finishes the job meanwhile
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        await wait_for(lambda: _is_done(session_factory, job.job_id), 20, "the worker to finish the job")
    restarted, front = await bots(follower_ttl_s=0.6), Front()
    report = await asyncio.wait_for(
        recover_unfinished(session_factory, restarted, front.notify, on_resumed=front.on_resumed), 10
    )
    assert report.reattached == [job.job_id]
    assert report.remade == report.resubmitted == report.failed == [] and front.notified == []
    result = await asyncio.wait_for(front.resumed[job.job_id].result(), 10)  # no worker runs now: replayed
    assert isinstance(result, JobDone) and [m["seed"] for m in result.payload.metadata] == [21]


async def _is_done(session_factory, job_id: str) -> bool:
    return (await usage(session_factory, job_id)).status == "done"


async def test_a_job_redis_lost_is_rebuilt_from_its_usage_row(bots, redis_client, keys, demo_engine, session_factory):
    job = imagine_job(ALICE, count=2, seed=40)
    await record(session_factory, job)  # queued in the registry; Redis was wiped before any worker took it
    bot, front = await bots(), Front()
    report = await recover_unfinished(session_factory, bot, front.notify, on_resumed=front.on_resumed)
    assert report.resubmitted == [job.job_id]
    async with running_worker(redis_client, keys, demo_engine, session_factory):
        result = await asyncio.wait_for(front.resumed[job.job_id].result(), 20)
    assert isinstance(result, JobDone)
    assert [m["seed"] for m in result.payload.metadata] == [40, 41]


async def _truthy(value) -> bool:
    return bool(value)
