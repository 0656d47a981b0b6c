"""A piece of upkeep that runs every few seconds in the background (heartbeats, sweeps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """`work()` every `interval_s` in a background task (first at once when `run_first`) until `stop()`.

    `stop()` sets an event the task waits on rather than relying on cancelling it: a cancel that lands
    inside a redis-py command can be swallowed there, and a cancelled loop would then run on (seen in the
    tests: a worker's heartbeat kept beating for the 30 s its stop waited). Failures of `work` are logged
    and the next turn tries again.
    """

    def __init__(self, work: Callable[[], Awaitable[object]], interval_s: float, *, name: str, run_first: bool = False):
        self.work = work
        self.interval_s = interval_s
        self.name = name
        self.run_first = run_first
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        if not self.run_first:
            await self._pause()
        while not self._stop.is_set():
            try:
                await self.work()
            except Exception:  # Redis or the database briefly away: the next turn tries again
                log.warning("%s failed", self.name, exc_info=True)
            await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end, and wait for it (it ends after its current turn); cancel it past `timeout_s`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        _done, pending = await asyncio.wait([task], timeout=timeout_s)
        for late in pending:
            late.cancel()

