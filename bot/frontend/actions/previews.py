"""A saved revision's preview grid: the worker renders the four preview prompts in its style and stores
the grid; the bot puts it on the announcement of the save. The style is saved whatever happens here."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.frontend import embeds
from bot.frontend.errors import unexpected_error
from bot.jobs import (
    JobDone,
    JobFailed,
    JobRejectedError,
    PreviewJob,
    PreviewResult,
    QueueFullError,
    log_job_event,
    new_job_id,
)
from stylecodes.codec import StyleCode
from stylecodes.versions import UnservedVersionError

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot

log = logging.getLogger(__name__)


class PreviewFailedError(Exception):
    """The worker could not render a revision's preview grid; `reason` is its user-facing reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


async def render_preview(bot: StylecodesBot, revision_id: int, code: StyleCode, *, user_id: int) -> PreviewResult:
    """Queue the four-prompt preview grid of a saved revision and wait for it; the worker stores it.

    Raises what `submit` raises (the queue is full, an unserved version), and `PreviewFailedError`
    when the worker could not render it.
    """
    settings = bot.resources.settings
    job = PreviewJob(
        job_id=new_job_id(),
        user_id=user_id,
        revision_id=revision_id,
        code=code.canonical,
        steps=settings.preview_steps,
        size=settings.image_size,
    )
    handle = await bot.resources.dispatcher.submit(job)
    event = await handle.result()
    if isinstance(event, JobFailed):
        log.warning("event=preview_failed job_id=%s revision_id=%d: %s", job.job_id, revision_id, event.reason)
        raise PreviewFailedError(event.reason)
    assert isinstance(event, JobDone) and isinstance(event.payload, PreviewResult)
    log_job_event("delivered", job.job_id, kind="preview", revision_id=revision_id)
    return event.payload


def preview_problem(error: BaseException) -> str:
    """Why a saved revision has no preview grid, for the footer where the grid would be."""
    if isinstance(error, QueueFullError):
        return f"the bot was busy ({error.queue_cap} jobs waiting) when it was saved."
    if isinstance(error, JobRejectedError):  # any other refusal at submit: its own words
        return f"it was not queued. {error}"
    if isinstance(error, UnservedVersionError):
        return f"stylecodes of version {error.version} are not served here, so none can be rendered."
    if isinstance(error, PreviewFailedError):
        return f"the worker could not render it: {error.reason}"
    return unexpected_error(error, "rendering a preview grid") + "."


async def attach_preview(
    bot: StylecodesBot, message: Any, embed: discord.Embed, revision_id: int, code: StyleCode, user_id: int
) -> None:
    """Render the grid and put it on the announcement `message` (its `embed`), or say in the footer why not."""
    files = []
    try:
        preview = await render_preview(bot, revision_id, code, user_id=user_id)
    except Exception as exc:
        log.info("no preview for revision %d: %s", revision_id, exc)
        embed.set_footer(text=embeds.clip(f"No preview grid: {preview_problem(exc)}", embeds.FOOTER_MAX))
    else:
        embed.remove_footer()
        files = [discord.File(io.BytesIO(preview.grid_webp), filename="preview.webp")]
        embed.set_image(url="attachment://preview.webp")
    try:
        await message.edit(embed=embed, attachments=files)
    except discord.HTTPException as exc:  # the token expired: /stylecode show has it
        log.info("could not attach the preview of revision %d: %s", revision_id, exc)
