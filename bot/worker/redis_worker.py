"""The worker side of the Redis Streams transport (`python -m bot.worker` runs one).

Loop: reclaim jobs a silent worker left pending (XAUTOCLAIM after `idle_timeout_s`), read new ones
(XREADGROUP on the stream of every served version), pick a fair batch, run it, store each result
(registry) and only then publish it and XACK (one Lua step). While jobs are held, a heartbeat resets
their idle time (XCLAIM JUSTID), so only a worker that really stopped loses them. A job delivered
more than `max_deliveries` times is failed with the reason, instead of crashing workers forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.dispatch.base import DispatchLimits
from bot.dispatch.redis_streams import (
    DEFAULT_RESULT_TTL_S,
    FINISH_SCRIPT,
    GROUP,
    RedisKeys,
    encode_event,
)
from bot.jobs import Job, JobEvent, JobFailed, JobStarted, job_from_dict, log_job_event
from bot.worker.fairness import FairQueue
from bot.worker.models import ModelCache
from bot.worker.runner import FINISHED_STATUSES, BatchRunner, Outcome, record_outcome

log = logging.getLogger(__name__)

REDIS_RETRY_S = 2.0
RESULT_LOST = (
    "Your job finished, but its result was lost on the way back (the queue server failed at that moment). "
    "Please run it again."
)
DEPARTED_AFTER_S = 24 * 3600  # a consumer silent this long, holding nothing, belonged to a stopped process


@dataclass
class Delivery:
    """A job this worker holds: where it came from, for the XACK."""

    job: Job
    stream: str
    message_id: str
    submitted_at: float | None


def default_consumer_name() -> str:
    """host:pid:random, unique per process, and the pid lets an operator (or a test) find the process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class RedisWorker:
    def __init__(
        self,
        *,
        redis: Redis,
        limits: DispatchLimits,
        models: ModelCache,
        session_factory: async_sessionmaker[AsyncSession],
        keys: RedisKeys | None = None,
        consumer: str | None = None,
        idle_timeout_s: float = 120.0,
        max_deliveries: int = 3,
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        step_delay_s: float = 0.0,
        read_block_ms: int = 500,
    ) -> None:
        self.redis = redis  # decode_responses=True
        self.limits = limits
        self.models = models
        self.session_factory = session_factory
        self.keys = keys or RedisKeys()
        self.consumer = consumer or default_consumer_name()
        self.idle_timeout_s = idle_timeout_s
        self.max_deliveries = max_deliveries
        self.result_ttl_s = result_ttl_s
        self.read_block_ms = read_block_ms
        self._finish_script = redis.register_script(FINISH_SCRIPT)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecodes-engine")
        self._runner = BatchRunner(
            models=models,
            session_factory=session_factory,
            publish=self._publish,
            executor=self._executor,
            progress_interval_s=limits.progress_interval_s,
            step_delay_s=step_delay_s,
        )
        self._pool = FairQueue()  # held, not started yet
        self._held: dict[str, Delivery] = {}  # job id -> delivery, pool and running
        self._stopping = asyncio.Event()
        self._last_reclaim = 0.0
        self.batches_run = 0  # for /healthz

    @property
    def streams(self) -> dict[int, str]:
        return {version: self.keys.stream(version) for version in self.limits.served_versions}

    # --- Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer group of every served version (creating stream and group when missing)."""
        for stream in self.streams.values():
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            # Visible in XINFO CONSUMERS from now on, not only after its first delivery.
            await self.redis.xgroup_createconsumer(stream, GROUP, self.consumer)
        log.info("worker %s serving versions %s", self.consumer, list(self.streams))

    def stop(self) -> None:
        """Finish the running batch, then return from `run`. Held jobs not started are reclaimed by others."""
        self._stopping.set()

    async def run(self) -> None:
        await self.start()
        heartbeat = asyncio.create_task(self._heartbeat(), name="stylecodes-worker-heartbeat")
        try:
            while not self._stopping.is_set():
                try:
                    await self.step()
                except (RedisConnectionError, RedisTimeoutError) as exc:  # Redis restarting: wait, then go on
                    log.warning("redis unavailable (%s); retrying in %.0f s", exc, REDIS_RETRY_S)
                    await asyncio.sleep(REDIS_RETRY_S)
                except Exception:  # e.g. the database is down: the batch's jobs are redelivered later
                    log.exception("worker step failed; retrying in %.0f s", REDIS_RETRY_S)
                    await asyncio.sleep(REDIS_RETRY_S)
        finally:
            heartbeat.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def step(self) -> None:
        """One turn of the loop: reclaim (at most every idle_timeout/2), read, run one batch."""
        if time.monotonic() - self._last_reclaim >= min(self.idle_timeout_s / 2, 5.0):
            self._last_reclaim = time.monotonic()
            await self.reclaim()
        if len(self._pool) < self.limits.max_batch_size:
            await self._read(block=len(self._pool) == 0)
        batch = self._pool.pop_batch(self.limits.max_batch_size)
        if batch:
            await self._process(batch)

    # --- Taking jobs -------------------------------------------------------------------------------

    async def _read(self, *, block: bool) -> None:
        response = await self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {stream: ">" for stream in self.streams.values()},
            count=self.limits.max_batch_size,
            block=self.read_block_ms if block else None,
        )
        for stream, entries in response or []:
            for message_id, fields in entries:
                await self._take(stream, message_id, fields)

    async def reclaim(self) -> None:
        """Take over jobs pending on a silent consumer for longer than the idle timeout."""
        min_idle_ms = int(self.idle_timeout_s * 1000)
        for version, stream in self.streams.items():
            start = "0-0"
            while True:
                next_start, messages, deleted = await self.redis.xautoclaim(
                    stream, GROUP, self.consumer, min_idle_time=min_idle_ms, start_id=start, count=50
                )
                for message_id in deleted or []:  # entry gone (trimmed): nothing to run
                    await self.redis.xack(stream, GROUP, message_id)
                for message_id, fields in messages:
                    deliveries = await self._delivery_count(stream, message_id)
                    metrics.JOBS_RECLAIMED.labels(str(version)).inc()
                    await self._take(stream, message_id, fields, deliveries=deliveries)
                if next_start in ("0-0", b"0-0"):
                    break
                start = next_start
        await self.forget_departed_consumers()

    async def forget_departed_consumers(self) -> None:
        """Drop consumers of stopped processes: nothing pending, silent for `DEPARTED_AFTER_S` (else XINFO grows)."""
        for stream in self.streams.values():
            for consumer in await self.redis.xinfo_consumers(stream, GROUP):
                idle_s = consumer["idle"] / 1000
                if consumer["name"] != self.consumer and consumer["pending"] == 0 and idle_s > DEPARTED_AFTER_S:
                    await self.redis.xgroup_delconsumer(stream, GROUP, consumer["name"])

    async def _delivery_count(self, stream: str, message_id: str) -> int:
        pending = await self.redis.xpending_range(stream, GROUP, min=message_id, max=message_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _take(self, stream: str, message_id: str, fields: dict, *, deliveries: int = 1) -> None:
        try:
            job = job_from_dict(json.loads(fields["job"]))
        except Exception:  # a malformed entry would fail on every worker: drop it loudly
            log.exception("dropping malformed entry %s in %s", message_id, stream)
            await self.redis.xack(stream, GROUP, message_id)
            return
        submitted_at = float(fields["submitted_at"]) if fields.get("submitted_at") else None
        delivery = Delivery(job, stream, message_id, submitted_at)
        if deliveries > 1:
            log_job_event("reclaimed", job.job_id, worker=self.consumer, deliveries=deliveries)
        if deliveries > self.max_deliveries:
            reason = (
                f"This job was started {deliveries - 1} times and each time its worker stopped before finishing "
                "(crashed or restarted), so it was given up. Try again, perhaps with fewer images or steps."
            )
            await self._fail_outside_batch(delivery, JobFailed(reason, JobFailed.DELIVERY_LIMIT))
            return
        if job.job_id in self._held:  # our own job, claimed back: already in the pool or running
            return
        self._held[job.job_id] = delivery
        self._pool.push(job)

    # --- Running -----------------------------------------------------------------------------------

    async def _process(self, batch: list[Job]) -> None:
        try:
            runnable = [job for job in batch if await self._start(job)]
            if runnable:
                for outcome in await self._runner.run(runnable):
                    await self._finish(outcome)
                self.batches_run += 1
        except Exception:
            for job in batch:  # not acked: stop refreshing them, so a later delivery redoes them
                self._held.pop(job.job_id, None)
            raise
        await self._update_queue_depth()

    async def _start(self, job: Job) -> bool:
        """Mark the job started; False (and acked) when it already finished on a worker that died before XACK."""
        delivery = self._held[job.job_id]
        state = await self.redis.hget(self.keys.job(job.job_id), "state")
        if state in FINISHED_STATUSES:  # its result is already in its event stream
            await self.redis.xack(delivery.stream, GROUP, delivery.message_id)
            self._held.pop(job.job_id, None)
            return False
        if await self._runner.start_job(job, queued_at=delivery.submitted_at, worker=self.consumer):
            return True
        # The registry has it finished, but the result never reached Redis: never run it twice.
        await self._ack(delivery, JobFailed(RESULT_LOST, JobFailed.LOST))
        return False

    async def _finish(self, outcome: Outcome) -> None:
        """Store, then publish + XACK + release. If storing fails the job stays pending and is retried."""
        delivery = self._held[outcome.job.job_id]
        try:
            await self._runner.store(outcome)
        except Exception:
            log.exception("could not store the result of job %s; leaving it pending for a retry", outcome.job.job_id)
            self._held.pop(outcome.job.job_id, None)  # stop refreshing it: another delivery will retry it
            return
        await self._ack(delivery, outcome.event)
        record_outcome(outcome.job, outcome.event)

    async def _fail_outside_batch(self, delivery: Delivery, event: JobFailed) -> None:
        await self._runner.store(Outcome(delivery.job, event))
        await self._ack(delivery, event)
        record_outcome(delivery.job, event)

    async def _ack(self, delivery: Delivery, event: JobEvent) -> None:
        job = delivery.job
        keys = self.keys
        await self._finish_script(
            keys=[
                keys.active,
                keys.user(job.user_id),
                keys.waiting(job.version),
                keys.job(job.job_id),
                keys.events(job.job_id),
                delivery.stream,
            ],
            args=[
                job.job_id,
                GROUP,
                delivery.message_id,
                "done" if not isinstance(event, JobFailed) else "failed",
                encode_event(event),
                self.result_ttl_s,
            ],
        )
        self._held.pop(job.job_id, None)

    async def _publish(self, job: Job, event: JobEvent) -> None:
        """Progress and `JobStarted` (terminal events go through `_ack`)."""
        keys = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            if isinstance(event, JobStarted):
                pipe.hset(keys.job(job.job_id), mapping={"state": "running", "worker": self.consumer})
                pipe.zrem(keys.waiting(job.version), job.job_id)
            pipe.xadd(keys.events(job.job_id), {"event": encode_event(event)})
            await pipe.execute()

    # --- Upkeep ------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Reset the idle time of the jobs we hold (only those still ours), so nobody reclaims them."""
        interval = max(self.idle_timeout_s / 4, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._refresh_held()
            except Exception:
                log.warning("heartbeat failed", exc_info=True)

    async def _refresh_held(self) -> None:
        by_stream: dict[str, set[str]] = {}
        for delivery in list(self._held.values()):
            by_stream.setdefault(delivery.stream, set()).add(delivery.message_id)
        for stream, ids in by_stream.items():
            pending = await self.redis.xpending_range(
                stream, GROUP, min="-", max="+", count=1000, consumername=self.consumer
            )
            ours = [entry["message_id"] for entry in pending if entry["message_id"] in ids]
            if ours:
                await self.redis.xclaim(stream, GROUP, self.consumer, min_idle_time=0, message_ids=ours, justid=True)

    async def _update_queue_depth(self) -> None:
        for version in self.limits.served_versions:
            metrics.QUEUE_DEPTH.labels(str(version)).set(await self.redis.zcard(self.keys.waiting(version)))

    def health(self) -> dict:
        return {
            "ok": not self._stopping.is_set(),
            "consumer": self.consumer,
            "versions": list(self.streams),
            "models_loaded": list(self.models.loaded_versions),
            "held_jobs": len(self._held),
            "batches_run": self.batches_run,
        }
