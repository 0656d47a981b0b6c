"""Encoding an attached picture: download it (from Discord's CDN only), check it, queue the encode job and
wait for the code. The picture is not kept. `/stylecode encode` and `/imagine style_image:` both use it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot.frontend import embeds
from bot.frontend.actions.delivery import edit_quietly
from bot.frontend.attachments import download
from bot.frontend.errors import UserError
from bot.jobs import EncodeJob, EncodeResult, JobDone, JobFailed, log_job_event, new_job_id
from stylecodes.codec import StyleCode
from stylecodes.images import load_image, png_bytes

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot


@dataclass(frozen=True)
class Encoded:
    code: StyleCode
    thumbnail_png: bytes
    filename: str


async def encode_attachment(
    bot: StylecodesBot, interaction: discord.Interaction, attachment: discord.Attachment
) -> Encoded:
    """Download, check, and encode one picture, for an interaction that is already deferred."""
    resources = bot.resources
    data = await download(resources.http_session, attachment, resources.attachment_policy)
    image = await asyncio.to_thread(load_image, data)
    thumbnail = await asyncio.to_thread(png_bytes, image, embeds.THUMBNAIL_SIZE)
    job = EncodeJob(new_job_id(), interaction.user.id, resources.settings.model_version, data)
    handle = await resources.dispatcher.submit(job)
    if handle.position > 1:
        await edit_quietly(interaction, content=f"Encoding… {embeds.queued_text(handle.position)}")
    event = await handle.result()
    if isinstance(event, JobFailed):
        log_job_event("failure_shown", job.job_id, kind="encode", code=event.code)
        raise UserError(event.reason)
    assert isinstance(event, JobDone) and isinstance(event.payload, EncodeResult)
    log_job_event("delivered", job.job_id, kind="encode")
    return Encoded(event.payload.codes[0], thumbnail, attachment.filename)
