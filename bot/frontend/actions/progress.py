"""Following a queued /imagine: its queue position and progress as edits of the message (throttled to
Discord's edit rate, with a small preview), then its outcome, delivered."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.dispatch.base import JobHandle
from bot.frontend import embeds
from bot.frontend.actions.delivery import deliver, edit_quietly, mark_delivered, result_message
from bot.frontend.errors import unexpected_error
from bot.jobs import (
    TERMINAL_EVENTS,
    ImagineResult,
    JobDone,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    log_job_event,
)

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot


class ProgressEdits:
    """Progress edits of one message: at most one per `interval` (from the end of the previous edit),
    always of the latest state. An event that comes too soon is kept (only the newest one) and sent
    when the interval ends; an event that would show what is already shown is skipped.
    `close()` before the final message, so no progress edit lands after it.
    """

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], interval: float, *, shown: str) -> None:
        self._send = send
        self._interval = interval
        self._shown = shown  # content of the last edit
        self._last = time.monotonic()  # when the last edit ended
        self._latest: dict[str, Any] | None = None
        self._sending = False
        self._task: asyncio.Task[None] | None = None

    def offer(self, fields: dict[str, Any]) -> None:
        self._latest = fields
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._latest is not None:
            wait = self._last + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            fields, self._latest = self._latest, None
            if fields is None or ("attachments" not in fields and fields.get("content") == self._shown):
                continue
            self._sending = True
            try:
                await self._send(fields)
            finally:
                self._sending = False
                self._last = time.monotonic()
            self._shown = fields.get("content") or ""

    async def close(self) -> None:
        """Drop the edit waiting for its turn; wait for one being sent (it must land before what follows)."""
        self._latest = None
        task = self._task
        if task is None or task.done():
            return
        if not self._sending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def progress_fields(event: JobQueued | JobStarted | JobProgress) -> dict[str, Any]:
    """The message's content (and preview) for a job that is not finished yet."""
    if isinstance(event, JobQueued):
        return {"content": embeds.queued_text(event.position)}
    if isinstance(event, JobStarted):
        return {"content": "Painting…"}
    files = [] if event.preview_png is None else [embeds.png_file(event.preview_png, "preview.png")]
    return {"content": embeds.progress_text(event.step, event.total), "attachments": files}


async def follow(
    bot: StylecodesBot,
    interaction: discord.Interaction,
    handle: JobHandle,
    summary: embeds.GenerationSummary,
    spoiler_ok: bool,
    shown: str,
) -> None:
    """Queue position and progress (throttled: Discord allows ~5 edits per 5 s per channel), then
    the outcome. `shown` is what the message says now (the "Queued" edit has just been made)."""
    resources = bot.resources
    edits = ProgressEdits(
        lambda fields: edit_quietly(interaction, **fields), resources.settings.progress_interval_s, shown=shown
    )
    outcome = None
    problem = "its progress stopped arriving before it finished"
    try:
        async for event in handle.events():
            if isinstance(event, TERMINAL_EVENTS):
                outcome = event
            else:
                edits.offer(progress_fields(event))
    except Exception as error:  # the event stream broke (a transport error), or a bug
        problem = unexpected_error(error, f"following job {handle.job_id}")
    finally:
        await edits.close()  # nothing of the progress may land after the outcome
    job_id = handle.job_id
    if isinstance(outcome, JobDone):
        assert isinstance(outcome.payload, ImagineResult)
        files, fields = result_message(job_id, interaction.user.id, summary, outcome.payload, spoiler_ok)
        ready = "your images are ready:"
        message = await deliver(interaction, files=files, channel_text=ready, job_id=job_id, **fields)
        if message is not None:
            log_job_event("delivered", job_id, kind="imagine", channel_id=message.channel.id, message_id=message.id)
            await mark_delivered(resources.session_factory, job_id, message.jump_url)
    elif isinstance(outcome, JobFailed):
        message = await deliver(interaction, content=f"❌ {outcome.reason}", job_id=job_id)
        if message is not None:
            log_job_event("failure_shown", job_id, code=outcome.code)
            await mark_delivered(resources.session_factory, job_id)
    else:
        log_job_event("lost_track", job_id, problem=problem)
        text = f"❌ I lost track of your job: {problem}. Please try again."
        await deliver(interaction, content=text, job_id=job_id)
