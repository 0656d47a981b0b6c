"""What the front end sees of dispatch: `Dispatcher.submit(job) -> JobHandle`, then `handle.events()`.

Two implementations: `LocalDispatcher` (in-process queue and engine thread, the default) and
`RedisDispatcher` (Redis Streams, any number of bot and worker processes). `make_dispatcher` in
`bot.dispatch` picks one from the settings.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot import metrics
from bot.jobs import TERMINAL_EVENTS, Job, JobDone, JobEvent

if TYPE_CHECKING:
    from bot.config import Settings


@dataclass(frozen=True)
class DispatchLimits:
    """Fairness and batching knobs shared by both transports (defaults are the issue's)."""

    served_versions: tuple[int, ...]  # the model versions this deployment's workers load
    max_jobs_per_user: int = 2  # queued + running per user, so one user cannot fill the queue
    queue_cap: int = 100  # queued + running in total before "busy, try again in a minute"
    max_batch_size: int = 4  # samples per engine call (the most one /imagine asks for)
    progress_interval_s: float = 1.5  # Discord rate-limits message edits; at most one progress event per interval
    # Redis: a job still queued after this long, while no live worker serves its version, is failed with the
    # reason (instead of "Queued" forever). The embedded worker cannot be missing.
    max_queue_wait_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchLimits:
        return cls(
            served_versions=tuple(settings.versions_served),
            max_jobs_per_user=settings.max_jobs_per_user,
            queue_cap=settings.queue_cap,
            max_batch_size=settings.max_batch_size,
            progress_interval_s=settings.progress_interval_s,
            max_queue_wait_s=settings.max_queue_wait_s,
        )

    def check_served(self, version: int) -> None:
        """Refuse, at submit, a job for a model version no worker of this deployment loads."""
        from stylecodes.versions import UnservedVersionError, check_served

        try:
            check_served(version, self.served_versions)
        except UnservedVersionError:
            metrics.JOBS_REJECTED.labels("unserved_version").inc()
            raise


def record_latency(kind: str, version: int | str, event: JobEvent, submitted_at: float | None) -> None:
    if submitted_at is None:
        return
    outcome = "done" if isinstance(event, JobDone) else "failed"
    metrics.JOB_LATENCY_SECONDS.labels(kind, str(version), outcome).observe(max(0.0, time.time() - submitted_at))


class FollowedElsewhere(Exception):
    """`adopt` found a live follower for the job (another bot process, or this one): it posts the outcome.

    `delivered`: its outcome was already handed to a bot, so there is nothing left to follow. Otherwise ask
    again after `retry_after_s`: the other follower may stop (a rolling restart) before the job ends.
    """

    def __init__(self, job_id: str, *, delivered: bool = False, retry_after_s: float = 10.0) -> None:
        self.job_id = job_id
        self.delivered = delivered
        self.retry_after_s = retry_after_s
        super().__init__(f"job {job_id} is {'delivered' if delivered else 'followed by a live bot process'}")


class JobHandle:
    """A submitted job: its id, its queue position at submit time, and its event stream.

    `events()` yields `JobQueued`, `JobStarted`, `JobProgress`..., and ends after `JobDone` or
    `JobFailed`. Iterate it once.
    """

    def __init__(self, job_id: str, position: int, source: Callable[[], AsyncIterator[JobEvent]]) -> None:
        self.job_id = job_id
        self.position = position
        self._source = source

    async def events(self) -> AsyncIterator[JobEvent]:
        async for event in self._source():
            yield event
            if isinstance(event, TERMINAL_EVENTS):
                return

    async def result(self) -> JobEvent:
        """Skip to the end: the `JobDone` or `JobFailed` event."""
        last: JobEvent | None = None
        async for event in self.events():
            last = event
        if last is None or not isinstance(last, TERMINAL_EVENTS):
            raise RuntimeError(f"job {self.job_id}: event stream ended without a result")
        return last

    def __repr__(self) -> str:
        return f"JobHandle(job_id={self.job_id!r}, position={self.position})"


@runtime_checkable
class Dispatcher(Protocol):
    limits: DispatchLimits

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, job: Job) -> JobHandle:
        """Queue `job`. Raises `UnservedVersionError`, `UserJobLimitError` or `QueueFullError` (user-facing)."""
        ...

    async def resume(self, job_id: str) -> JobHandle | None:
        """A handle replaying the job's events (any number of listeners); None when this transport lost it."""
        ...

    async def adopt(self, job_id: str) -> JobHandle | None:
        """Become the job's one follower (restart recovery): a replaying handle, None when the transport lost it.

        Raises `FollowedElsewhere` while another live follower has it, so its result is posted once.
        """
        ...
