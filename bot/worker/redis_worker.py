"""The worker side of the Redis Streams transport (`python -m bot.worker` runs one).

Loop: reclaim jobs a silent worker left pending (XAUTOCLAIM after `idle_timeout_s`), read new ones
(XREADGROUP on the streams of every served version), pick a fair batch, give the jobs that do not fit back
to the version's `returned` stream at once (any idle worker takes them: a busy worker hoards nothing), run
the batch, store each result (registry) and only then publish it and XACK (one Lua step). While jobs are
held, a heartbeat resets their idle time (XCLAIM JUSTID), so only a worker that really stopped loses them;
the same heartbeat tells the bots this worker is live and refreshes the queue-depth gauge. A job delivered
more than `max_deliveries` times is failed with the reason, instead of crashing workers forever.

The Redis calls themselves are `bot.worker.consumer.StreamConsumer`'s; this module decides what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.jobs import Job, JobEvent, JobFailed, job_from_dict, log_job_event
from bot.protocol.limits import DispatchLimits
from bot.protocol.periodic import Periodic
from bot.protocol.streams import DEFAULT_RESULT_TTL_S, WORKER_BEAT_S, RedisKeys
from bot.protocol.usage import FINISHED_STATUSES, record_end, record_outcome
from bot.worker.consumer import Delivery, StreamConsumer, default_consumer_name
from bot.worker.fairness import FairQueue
from bot.worker.models import ModelCache
from bot.worker.runner import BatchRunner, Outcome

log = logging.getLogger(__name__)

REDIS_RETRY_S = 2.0
UNREADABLE = (
    "The worker could not read this job ({why}), so it could not run. Please run it again; if it keeps "
    "happening, tell the bot's operators."
)


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
        self.limits = limits
        self.models = models
        self.consumer = consumer or default_consumer_name()
        self.io = StreamConsumer(
            redis, keys or RedisKeys(), self.consumer, limits.served_versions, result_ttl_s=result_ttl_s
        )
        self.idle_timeout_s = idle_timeout_s
        self.max_deliveries = max_deliveries
        self.read_block_ms = read_block_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecodes-engine")
        self._runner = BatchRunner(
            models=models,
            session_factory=session_factory,
            publish=self.io.publish,
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
        return self.io.streams

    # --- Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer group of every served version (creating streams and groups when missing)."""
        await self.io.join()
        await self.io.beat()  # live from now on: the bots accept jobs for these versions
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
            try:
                await self.io.leave()
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
            taken += await self._read(list(self.io.returned_streams.values()), count=room, block=False)
        room = self.limits.max_batch_size - len(taken)
        if room > 0:
            # Nothing yet: wait for new jobs, or for jobs another worker gives back.
            streams = list(self.streams.values()) if taken else self.io.all_streams
            taken += await self._read(streams, count=room, block=not taken)
        if taken:
            batch = await self._pick(taken)
            if batch:
                await self._process(batch)

    # --- Taking jobs -------------------------------------------------------------------------------

    async def _read(self, streams: list[str], *, count: int, block: bool) -> list[Delivery]:
        entries = await self.io.read(streams, count=count, block_ms=self.read_block_ms if block else None)
        taken = []
        for stream, message_id, fields in entries:
            delivery = await self._take(stream, message_id, fields)
            if delivery is not None:
                taken.append(delivery)
        return taken

    async def reclaim(self) -> list[Delivery]:
        """Take over jobs pending on a silent consumer for longer than the idle timeout."""
        min_idle_ms = int(self.idle_timeout_s * 1000)
        taken = []
        for stream in self.io.all_streams:
            version = self.io.version_of(stream)
            async for messages, deleted in self.io.claim_idle(stream, min_idle_ms):
                for message_id in deleted:  # entry gone (deleted by hand, trimmed): fail its job
                    await self._entry_deleted(stream, message_id)
                for message_id, fields in messages:
                    times = await self.io.delivery_count(stream, message_id)
                    metrics.JOBS_RECLAIMED.labels(str(version)).inc()
                    delivery = await self._take(stream, message_id, fields, times_delivered=times)
                    if delivery is not None:
                        taken.append(delivery)
        await self.io.forget_departed_consumers()
        return taken

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
        if await self.io.job_state(job.job_id) in FINISHED_STATUSES:
            await self.io.drop(stream, message_id)  # a leftover copy of a job that ended: nothing to run or tell
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
            await self.io.give_back(self._held.pop(job.job_id))
        return batch

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
        job_id = await self.io.job_of_entry(stream, message_id)
        await self._fail_entry(stream, message_id, job_id, "its queue entry was deleted from Redis")

    async def _fail_entry(self, stream: str, message_id: str, job_id: str | None, why: str) -> None:
        """Fail the job of a broken entry (usage row first, then publish + release + XACK); drop the entry."""
        record = await self.io.job_record(job_id) if job_id else None
        if record is None or record[0] is None or record[3] in FINISHED_STATUSES:
            log.error("dropping entry %s of %s: no unfinished job to fail (job id %s)", message_id, stream, job_id)
            await self.io.drop(stream, message_id)
            return
        assert job_id is not None
        user_id, version, kind, _state = record
        event = JobFailed(UNREADABLE.format(why=why), JobFailed.BAD_INPUT)
        await self._runner.store_usage(job_id, event)  # as the runner stores any failure; raises: retried later
        await self.io.finish(job_id, user_id, version, stream, message_id, event)
        record_end(job_id, kind or "unknown", version, event)

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
        if await self.io.job_state(job.job_id) in FINISHED_STATUSES:  # its outcome is out already (a duplicate)
            await self.io.drop(delivery.stream, delivery.message_id)
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
        await self.io.finish(job.job_id, job.user_id, job.version, delivery.stream, delivery.message_id, event)
        self._held.pop(job.job_id, None)

    # --- Upkeep ------------------------------------------------------------------------------------

    @property
    def heartbeat_interval_s(self) -> float:
        return max(min(self.idle_timeout_s / 4, WORKER_BEAT_S), 0.05)

    async def _heartbeat(self) -> None:
        """Tell the bots we are live, keep the jobs we hold (nobody reclaims them), refresh the queue depth."""
        await self.io.beat()
        await self.io.keep(list(self._held.values()))
        await self._update_queue_depth()

    async def _update_queue_depth(self) -> None:
        for version, depth in (await self.io.queue_depths()).items():
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
