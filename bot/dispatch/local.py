"""The embedded default: an in-process asyncio queue and one engine thread, inside the bot process.

Nothing to install beyond Python packages. The event loop only queues, schedules and publishes; the
engine runs on a dedicated thread, so Discord keeps getting answers while a batch renders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.dispatch.base import FollowedElsewhere, JobHandle, record_latency
from bot.jobs import (
    TERMINAL_EVENTS,
    Job,
    JobDone,
    JobEvent,
    JobFailed,
    JobQueued,
    QueueFullError,
    UserJobLimitError,
    log_job_event,
)
from bot.protocol.limits import DispatchLimits
from bot.protocol.usage import record_outcome
from bot.worker.fairness import FairQueue
from bot.worker.models import ModelCache
from bot.worker.runner import BatchRunner, Outcome

log = logging.getLogger(__name__)


class _EventLog:
    """Every event of one job, kept until the job ends, so any number of listeners (late ones too) see all."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.changed = asyncio.Condition()

    async def append(self, event: JobEvent) -> None:
        async with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    async def follow(self) -> AsyncIterator[JobEvent]:
        seen = 0
        while True:
            async with self.changed:
                while seen >= len(self.events):
                    await self.changed.wait()
                pending = self.events[seen:]
            seen += len(pending)
            for event in pending:
                yield event
                if isinstance(event, TERMINAL_EVENTS):
                    return


class LocalDispatcher:
    """`submit` queues a job in this process; a background task feeds fair batches to the engine thread."""

    def __init__(
        self,
        *,
        limits: DispatchLimits,
        models: ModelCache,
        session_factory: async_sessionmaker[AsyncSession],
        step_delay_s: float = 0.0,
    ) -> None:
        self.limits = limits
        self.models = models
        self._queue = FairQueue()
        self._logs: dict[str, _EventLog] = {}  # jobs queued or running, and finished ones with listeners
        self._active: set[str] = set()  # queued + running, for the global cap
        self._jobs_by_user: dict[int, set[str]] = {}  # the same, for the per-user limit (jobs that count toward it)
        self._queued_at: dict[str, float] = {}
        self._positions: dict[str, int] = {}  # the queue position each waiting job was last told
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecodes-engine")
        self._runner = BatchRunner(
            models=models,
            session_factory=session_factory,
            publish=self._publish,
            executor=self._executor,
            progress_interval_s=limits.progress_interval_s,
            step_delay_s=step_delay_s,
        )
        self._task: asyncio.Task[None] | None = None

    # --- Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="stylecodes-local-dispatch")

    async def close(self) -> None:
        """Stop taking batches. Jobs still queued stay `queued` in the registry; the next start recovers them."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        # A batch already in the engine finishes (its rows stay `running` and are recovered at the next start).
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    # --- Front end ---------------------------------------------------------------------------------

    @property
    def active_jobs(self) -> int:
        """Queued + running."""
        return len(self._active)

    async def submit(self, job: Job) -> JobHandle:
        self.limits.check_served(job.version)
        if self.active_jobs >= self.limits.queue_cap:
            metrics.JOBS_REJECTED.labels("queue_full").inc()
            log_job_event("rejected", job.job_id, reason="queue_full", user_id=job.user_id)
            raise QueueFullError(self.limits.queue_cap)
        mine = self._jobs_by_user.get(job.user_id, set())
        if job.limited_per_user and len(mine) >= self.limits.max_jobs_per_user:
            metrics.JOBS_REJECTED.labels("user_limit").inc()
            log_job_event("rejected", job.job_id, reason="user_limit", user_id=job.user_id)
            raise UserJobLimitError(self.limits.max_jobs_per_user)
        if job.job_id in self._logs:
            raise ValueError(f"job {job.job_id} was already submitted")

        self._active.add(job.job_id)
        if job.limited_per_user:
            self._jobs_by_user[job.user_id] = mine | {job.job_id}
        self._logs[job.job_id] = events = _EventLog()
        self._queued_at[job.job_id] = time.time()
        self._queue.push(job)
        position = sum(1 for queued in self._queue.jobs() if queued.version == job.version)
        self._positions[job.job_id] = position
        await events.append(JobQueued(position))
        metrics.JOBS_SUBMITTED.labels(job.kind, str(job.version)).inc()
        self._update_queue_depth()
        log_job_event("queued", job.job_id, kind=job.kind, version=job.version, user_id=job.user_id, position=position)
        self._wakeup.set()
        return JobHandle(job.job_id, position, events.follow)

    async def resume(self, job_id: str) -> JobHandle | None:
        """A handle on a job this process still holds; None after a restart (the in-process queue is gone)."""
        events = self._logs.get(job_id)
        if events is None:
            return None
        return JobHandle(job_id, 0, events.follow)

    async def adopt(self, job_id: str) -> JobHandle | None:
        """None after a restart (the queue died with the old process); a job this process holds has its follower."""
        if job_id in self._logs:
            raise FollowedElsewhere(job_id, retry_after_s=1.0)
        return None

    # --- Worker ------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            batch = self._queue.pop_batch(self.limits.max_batch_size)
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._update_queue_depth()
            await self._publish_positions(batch[0].version)
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving other jobs whatever one batch did
                log.exception("local dispatch: unexpected error around a batch")
                for job in batch:
                    if job.job_id in self._queued_at:
                        reason = "The worker hit an internal error on this job. Please try again."
                        await self._finish(Outcome(job, JobFailed(reason, JobFailed.ENGINE_ERROR)))

    async def _run_batch(self, batch: list[Job]) -> None:
        runnable = []
        for job in batch:
            ended = await self._runner.start_job(job, queued_at=self._queued_at.get(job.job_id))
            if ended is None:
                runnable.append(job)
            else:  # the registry says it failed already: never run it, tell what it said
                await self._end(job, ended)
        if runnable:
            for outcome in await self._runner.run(runnable):
                await self._finish(outcome)

    async def _finish(self, outcome: Outcome) -> None:
        job = outcome.job
        try:
            await self._runner.store(outcome)
        except Exception:
            log.exception("could not store the result of job %s", job.job_id)
            reason = "The result could not be saved (database error). Please try again."
            outcome = Outcome(job, JobFailed(reason, JobFailed.ENGINE_ERROR))
        await self._end(job, outcome.event)
        record_outcome(job, outcome.event)

    async def _end(self, job: Job, event: JobDone | JobFailed) -> None:
        record_latency(job.kind, job.version, event, self._queued_at.get(job.job_id))
        self._release(job)
        await self._publish(job, event)
        self._logs.pop(job.job_id, None)  # listeners already following keep their own reference

    async def _publish_positions(self, version: int) -> None:
        """Tell the jobs still waiting for `version` their new place (in submit order, as at submit)."""
        waiting = sorted(
            (job for job in self._queue.jobs() if job.version == version), key=lambda job: self._queued_at[job.job_id]
        )
        for position, job in enumerate(waiting, start=1):
            if self._positions.get(job.job_id) != position:
                self._positions[job.job_id] = position
                await self._publish(job, JobQueued(position))

    def _release(self, job: Job) -> None:
        self._positions.pop(job.job_id, None)
        self._queued_at.pop(job.job_id, None)
        self._active.discard(job.job_id)
        mine = self._jobs_by_user.get(job.user_id)
        if mine is not None:
            mine.discard(job.job_id)
            if not mine:
                del self._jobs_by_user[job.user_id]

    async def _publish(self, job: Job, event: JobEvent) -> None:
        events = self._logs.get(job.job_id)
        if events is not None:
            await events.append(event)

    def _update_queue_depth(self) -> None:
        depth: dict[int, int] = dict.fromkeys(self.limits.served_versions, 0)
        for job in self._queue.jobs():
            depth[job.version] = depth.get(job.version, 0) + 1
        for version, count in depth.items():
            metrics.QUEUE_DEPTH.labels(str(version)).set(count)
