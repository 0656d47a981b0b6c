"""The worker side of the Redis Streams transport (`python -m bot.worker` runs one).

Loop: reclaim jobs a silent worker left pending (XAUTOCLAIM after `idle_timeout_s`), read new ones
(XREADGROUP on the streams of every served version), pick a fair batch, give the jobs that do not fit back
to the version's `returned` stream at once (any idle worker takes them: a busy worker hoards nothing), run
the batch, store each result (registry) and only then publish it and XACK (one Lua step). While jobs are
held, a heartbeat resets their idle time (XCLAIM JUSTID), so only a worker that really stopped loses them;
the same heartbeat tells the bots this worker is live and refreshes the queue-depth gauge. A job delivered
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
    WORKER_BEAT_S,
    Periodic,
    RedisKeys,
    beat,
    encode_event,
)
from bot.jobs import Job, JobEvent, JobFailed, JobStarted, job_from_dict, log_job_event
from bot.worker.fairness import FairQueue
from bot.worker.models import ModelCache
from bot.worker.runner import FINISHED_STATUSES, BatchRunner, Outcome, record_end, record_outcome

log = logging.getLogger(__name__)

REDIS_RETRY_S = 2.0
DEPARTED_AFTER_S = 24 * 3600  # a consumer silent this long, holding nothing, belonged to a stopped process
UNREADABLE = (
    "The worker could not read this job ({why}), so it could not run. Please run it again; if it keeps "
    "happening, tell the bot's operators."
)

# Give a job back: a copy at the end of the version's `returned` stream, the original acked and deleted, in
# one step, and only while this consumer still holds it (so it is never duplicated).
# KEYS: from_stream, returned_stream, job. ARGV: group, message_id, consumer, job_json, job_id, submitted_at,
# deliveries (attempts so far, not counting this delivery). -> the new entry id, or nil
RETURN_SCRIPT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return false end
local id = redis.call('XADD', KEYS[2], '*', 'job', ARGV[4], 'job_id', ARGV[5], 'submitted_at', ARGV[6],
                      'deliveries', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'entry', KEYS[2] .. ' ' .. id) end
return id
"""


@dataclass
class Delivery:
    """A job this worker holds: where it came from (for the XACK), and how often it was delivered."""

    job: Job
    stream: str
    message_id: str
    submitted_at: float | None
    fields: dict
    deliveries: int = 1


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
        self._return_script = redis.register_script(RETURN_SCRIPT)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecodes-engine")
        self._runner = BatchRunner(
            models=models,
            session_factory=session_factory,
            publish=self._publish,
            executor=self._executor,
            progress_interval_s=limits.progress_interval_s,
            step_delay_s=step_delay_s,
        )
        self._held: dict[str, Delivery] = {}  # job id -> delivery: taken this turn, then the running batch
        self._stopping = asyncio.Event()
        self._last_reclaim = 0.0
        self.batches_run = 0  # for /healthz

    @property
    def streams(self) -> dict[int, str]:
        return {version: self.keys.stream(version) for version in self.limits.served_versions}

    @property
    def returned_streams(self) -> dict[int, str]:
        return {version: self.keys.returned(version) for version in self.limits.served_versions}

    def _version_of(self, stream: str) -> int:
        for version in self.limits.served_versions:
            if stream in (self.keys.stream(version), self.keys.returned(version)):
                return version
        raise ValueError(f"{stream} is not a stream this worker reads")

    @property
    def _all_streams(self) -> list[str]:
        return [*self.returned_streams.values(), *self.streams.values()]  # returned first: older jobs

    # --- Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer group of every served version (creating streams and groups when missing)."""
        for stream in self._all_streams:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            # Visible in XINFO CONSUMERS from now on, not only after its first delivery.
            await self.redis.xgroup_createconsumer(stream, GROUP, self.consumer)
        await self._beat()  # live from now on: the bots accept jobs for these versions
        await self._update_queue_depth()
        log.info("worker %s serving versions %s", self.consumer, list(self.streams))

    def stop(self) -> None:
        """Finish the running batch, then return from `run`. The worker holds no other job."""
        self._stopping.set()

    async def run(self) -> None:
        await self.start()
        heartbeat = Periodic(self._heartbeat, self.heartbeat_interval_s, name="stylecodes-worker-heartbeat")
        heartbeat.start()
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
            await heartbeat.stop()  # so no beat lands after the unregistering below
            self._executor.shutdown(wait=False, cancel_futures=True)
            try:  # no longer live: bots stop queueing for us (when no other worker serves the version)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for version in self.streams:
                        pipe.zrem(self.keys.workers(version), self.consumer)
                    await pipe.execute()
            except Exception:
                log.warning("could not unregister worker %s; it counts as live a few more seconds", self.consumer)

    async def step(self) -> None:
        """One turn of the loop: reclaim (at most every idle_timeout/2), read, run one batch, give back the rest."""
        self._held.clear()  # nothing runs between turns; a turn cut short by an error leaves its jobs to a redelivery
        taken: list[Delivery] = []
        if time.monotonic() - self._last_reclaim >= min(self.idle_timeout_s / 2, 5.0):
            self._last_reclaim = time.monotonic()
            taken += await self.reclaim()
        room = self.limits.max_batch_size - len(taken)
        if room > 0:  # jobs given back first: they are older than any in the main streams
            taken += await self._read(list(self.returned_streams.values()), count=room, block=False)
        room = self.limits.max_batch_size - len(taken)
        if room > 0:
            # Nothing yet: wait for new jobs, or for jobs another worker gives back.
            streams = list(self.streams.values()) if taken else self._all_streams
            taken += await self._read(streams, count=room, block=not taken)
        if taken:
            batch = await self._pick(taken)
            if batch:
                await self._process(batch)

    # --- Taking jobs -------------------------------------------------------------------------------

    async def _read(self, streams: list[str], *, count: int, block: bool) -> list[Delivery]:
        response = await self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {stream: ">" for stream in streams},
            count=count,
            block=self.read_block_ms if block else None,
        )
        taken = []
        for stream, entries in response or []:
            for message_id, fields in entries:
                delivery = await self._take(stream, message_id, fields)
                if delivery is not None:
                    taken.append(delivery)
        return taken

    async def reclaim(self) -> list[Delivery]:
        """Take over jobs pending on a silent consumer for longer than the idle timeout."""
        min_idle_ms = int(self.idle_timeout_s * 1000)
        taken = []
        for stream in self._all_streams:
            version = self._version_of(stream)
            start = "0-0"
            while True:
                next_start, messages, deleted = await self.redis.xautoclaim(
                    stream, GROUP, self.consumer, min_idle_time=min_idle_ms, start_id=start, count=50
                )
                for message_id in deleted or []:  # entry gone (deleted by hand, trimmed): fail its job
                    await self._entry_deleted(stream, message_id)
                for message_id, fields in messages:
                    times = await self._delivery_count(stream, message_id)
                    metrics.JOBS_RECLAIMED.labels(str(version)).inc()
                    delivery = await self._take(stream, message_id, fields, times_delivered=times)
                    if delivery is not None:
                        taken.append(delivery)
                if next_start in ("0-0", b"0-0"):
                    break
                start = next_start
        await self.forget_departed_consumers()
        return taken

    async def forget_departed_consumers(self) -> None:
        """Drop consumers of stopped processes: nothing pending, silent for `DEPARTED_AFTER_S` (else XINFO grows)."""
        for stream in self._all_streams:
            for consumer in await self.redis.xinfo_consumers(stream, GROUP):
                idle_s = consumer["idle"] / 1000
                if consumer["name"] != self.consumer and consumer["pending"] == 0 and idle_s > DEPARTED_AFTER_S:
                    await self.redis.xgroup_delconsumer(stream, GROUP, consumer["name"])

    async def _delivery_count(self, stream: str, message_id: str) -> int:
        pending = await self.redis.xpending_range(stream, GROUP, min=message_id, max=message_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _take(self, stream: str, message_id: str, fields: dict, *, times_delivered: int = 1) -> Delivery | None:
        """The entry as a held `Delivery`, or None when it must not run here (handled already, or ours already)."""
        try:
            job = job_from_dict(json.loads(fields["job"]))
        except Exception as exc:  # would fail on every worker: fail the job now, with the reason
            log.exception("unreadable entry %s in %s", message_id, stream)
            await self._unreadable(stream, message_id, fields, exc)
            return None
        if job.job_id in self._held:  # our own job, claimed back: already taken or running. Before the limit!
            return None
        if await self.redis.hget(self.keys.job(job.job_id), "state") in FINISHED_STATUSES:
            await self._drop(stream, message_id)  # a leftover copy of a job that ended: nothing to run or tell
            return None
        submitted_at = float(fields["submitted_at"]) if fields.get("submitted_at") else None
        # A job given back by a busy worker keeps the deliveries it had; giving back is no attempt.
        deliveries = int(fields.get("deliveries") or 0) + times_delivered
        delivery = Delivery(job, stream, message_id, submitted_at, fields, deliveries)
        if deliveries > 1:
            log_job_event("reclaimed", job.job_id, worker=self.consumer, deliveries=deliveries)
        if deliveries > self.max_deliveries:
            reason = (
                f"This job was started {deliveries - 1} times and each time its worker stopped before finishing "
                "(crashed or restarted), so it was given up. Try again, perhaps with fewer images or steps."
            )
            await self._fail_outside_batch(delivery, JobFailed(reason, JobFailed.DELIVERY_LIMIT))
            return None
        self._held[job.job_id] = delivery
        return delivery

    async def _pick(self, taken: list[Delivery]) -> list[Job]:
        """A fair batch from what was taken; the rest goes back to the `returned` streams for any worker."""
        pool = FairQueue()
        for delivery in sorted(taken, key=lambda d: d.submitted_at or 0.0):  # the oldest job leads
            pool.push(delivery.job)
        batch = pool.pop_batch(self.limits.max_batch_size)
        for job in pool.jobs():
            await self._give_back(self._held.pop(job.job_id))
        return batch

    async def _give_back(self, delivery: Delivery) -> None:
        job = delivery.job
        version = self._version_of(delivery.stream)
        new_id = await self._return_script(
            keys=[delivery.stream, self.keys.returned(version), self.keys.job(job.job_id)],
            args=[
                GROUP,
                delivery.message_id,
                self.consumer,
                delivery.fields["job"],
                job.job_id,
                delivery.fields.get("submitted_at") or "",
                delivery.deliveries - 1,
            ],
        )
        log_job_event("returned", job.job_id, worker=self.consumer, entry=new_id or "lost")

    # --- Entries that cannot run ---------------------------------------------------------------------

    async def _unreadable(self, stream: str, message_id: str, fields: dict, exc: Exception) -> None:
        job_id = fields.get("job_id")
        if not job_id:
            try:
                job_id = json.loads(fields["job"]).get("job_id")
            except Exception:
                job_id = None
        why = f"its queue entry is damaged: {type(exc).__name__}: {exc}"
        await self._fail_entry(stream, message_id, job_id if isinstance(job_id, str) else None, why)

    async def _entry_deleted(self, stream: str, message_id: str) -> None:
        """A pending entry vanished from its stream: find its job (the `entry` its record keeps) and fail it."""
        ids = sorted(await self.redis.smembers(self.keys.active))
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "entry")
            entries = await pipe.execute()
        job_id = next((i for i, entry in zip(ids, entries, strict=True) if entry == f"{stream} {message_id}"), None)
        await self._fail_entry(stream, message_id, job_id, "its queue entry was deleted from Redis")

    async def _fail_entry(self, stream: str, message_id: str, job_id: str | None, why: str) -> None:
        """Fail the job of a broken entry (usage row first, then publish + release + XACK); drop the entry."""
        record = (
            await self.redis.hmget(self.keys.job(job_id), "user_id", "version", "kind", "state") if job_id else None
        )
        if record is None or record[0] is None or record[3] in FINISHED_STATUSES:
            log.error("dropping entry %s of %s: no unfinished job to fail (job id %s)", message_id, stream, job_id)
            await self._drop(stream, message_id)
            return
        user_id, version, kind, _state = record
        event = JobFailed(UNREADABLE.format(why=why), JobFailed.BAD_INPUT)
        await self._runner.store_usage(job_id, event)  # as the runner stores any failure; raises: retried later
        keys = self.keys
        await self._finish_script(
            keys=[
                keys.active,
                keys.user(user_id),
                keys.waiting(version),
                keys.job(job_id),
                keys.events(job_id),
                stream,
            ],
            args=[job_id, GROUP, message_id, "failed", encode_event(event), self.result_ttl_s, ""],
        )
        record_end(job_id, kind or "unknown", version, event)

    async def _drop(self, stream: str, message_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, message_id)
            pipe.xdel(stream, message_id)
            await pipe.execute()

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

    async def _start(self, job: Job) -> bool:
        """Mark the job started; False (and the job ended) when it must not run."""
        delivery = self._held[job.job_id]
        state = await self.redis.hget(self.keys.job(job.job_id), "state")
        if state in FINISHED_STATUSES:  # its outcome is in its event stream already (given up, or a duplicate)
            await self._drop(delivery.stream, delivery.message_id)
            self._held.pop(job.job_id, None)
            return False
        ended = await self._runner.start_job(job, queued_at=delivery.submitted_at, worker=self.consumer)
        if ended is None:
            return True
        await self._ack(delivery, ended)  # the registry has it failed: tell that, never run it
        return False

    async def _finish(self, outcome: Outcome) -> None:
        """Store, then publish + XACK + release. If storing fails the job stays pending and is retried."""
        delivery = self._held.get(outcome.job.job_id)
        if delivery is None:  # ended meanwhile (e.g. failed by a redelivery): its outcome is out already
            log.warning("job %s ended while it ran; dropping this result", outcome.job.job_id)
            return
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
                "",
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

    @property
    def heartbeat_interval_s(self) -> float:
        return max(min(self.idle_timeout_s / 4, WORKER_BEAT_S), 0.05)

    async def _heartbeat(self) -> None:
        """Tell the bots we are live, keep the jobs we hold (nobody reclaims them), refresh the queue depth."""
        await self._beat()
        await self._refresh_held()
        await self._update_queue_depth()

    async def _beat(self) -> None:
        await beat(self.redis, self.keys, self.consumer, self.streams, forget_after_s=DEPARTED_AFTER_S)

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
        async with self.redis.pipeline(transaction=False) as pipe:
            for version in self.limits.served_versions:
                pipe.zcard(self.keys.waiting(version))
            depths = await pipe.execute()
        for version, depth in zip(self.limits.served_versions, depths, strict=True):
            metrics.QUEUE_DEPTH.labels(str(version)).set(depth)

    def health(self) -> dict:
        return {
            "ok": not self._stopping.is_set(),
            "consumer": self.consumer,
            "versions": list(self.streams),
            "models_loaded": list(self.models.loaded_versions),
            "held_jobs": len(self._held),
            "batches_run": self.batches_run,
        }
