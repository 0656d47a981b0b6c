"""What the front end sees of dispatch: `Dispatcher.submit(job) -> JobHandle`, then `handle.events()`.

Two implementations: `LocalDispatcher` (in-process queue and engine thread, the default) and
`RedisDispatcher` (Redis Streams, any number of bot and worker processes). `make_dispatcher` in
`bot.dispatch` picks one from the settings.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from bot import metrics
from bot.jobs import TERMINAL_EVENTS, Job, JobDone, JobEvent
from bot.protocol.limits import DispatchLimits


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
