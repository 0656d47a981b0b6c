"""At start: the jobs the previous bot process left behind are resumed (their outcome posted in their
channel, since the interaction tokens died with that process), or failed with the reason and the user told.
The rules are `bot.dispatch.recovery`'s; this module tells the users."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import registry
from bot.dispatch.base import JobHandle
from bot.dispatch.recovery import recover_unfinished, shard_owner
from bot.frontend import embeds
from bot.frontend.actions.delivery import mark_delivered, post_to_channel, result_message
from bot.jobs import ImagineResult, JobDone, JobFailed, consecutive_seeds, log_job_event
from stylecodes.codec import parse_code

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot

log = logging.getLogger(__name__)


class Restarts:
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot

    async def recover(self) -> None:
        """Jobs queued or running when the bot stopped: resumed (the result is posted in their channel),
        or failed with the reason and the user told. See `bot.dispatch.recovery`."""
        resources = self.bot.resources
        settings = resources.settings
        report = await recover_unfinished(
            resources.session_factory,
            resources.dispatcher,
            self._notify,
            on_resumed=self._on_resumed,
            owns=shard_owner(settings.shard_count, settings.shard_ids),
        )
        if report.reattached or report.resubmitted or report.remade or report.failed:
            log.info(
                "event=recovered reattached=%d resubmitted=%d remade=%d failed=%d",
                len(report.reattached),
                len(report.resubmitted),
                len(report.remade),
                len(report.failed),
            )

    async def _notify(self, usage: registry.Usage, text: str) -> None:
        """Tell the user, in the job's channel, what became of a job found at restart."""
        message = await post_to_channel(self.bot, usage.channel_id, usage.user_id, text, job_id=usage.job_id)
        if message is not None:
            await mark_delivered(self.bot.resources.session_factory, usage.job_id)

    async def _on_resumed(self, usage: registry.Usage, handle: JobHandle) -> None:
        self.bot.spawn(self._follow(usage, handle), name=f"resumed-{usage.job_id}")

    async def _follow(self, usage: registry.Usage, handle: JobHandle) -> None:
        """The interaction token died with the old process: post the outcome in the job's channel."""
        event = await handle.result()
        if isinstance(event, JobFailed):
            await self._notify(usage, f"your job failed: {event.reason}")
            return
        assert isinstance(event, JobDone) and isinstance(event.payload, ImagineResult)
        session_factory = self.bot.resources.session_factory
        style_label = usage.code
        if usage.revision_id is not None:  # a named style: `name@rev`, as on every other result
            async with session_factory() as session:
                revision = await registry.get_revision(session, usage.revision_id)
            style_label = style_label if revision is None else revision.reference
        summary = embeds.GenerationSummary(
            prompt=usage.prompt,
            style_label=style_label,
            code=None if usage.code is None else parse_code(usage.code),
            seeds=consecutive_seeds(usage.seed, usage.count),
            strength=usage.strength,
            steps=usage.steps,
            guidance_scale=usage.guidance_scale,
            model_version=usage.model_version,
            negative_prompt=usage.negative_prompt,
        )
        # The channel's age restriction is unknown here: withhold flagged images.
        files, fields = result_message(usage.job_id, usage.user_id, summary, event.payload, spoiler_ok=False)
        message = await post_to_channel(
            self.bot,
            usage.channel_id,
            usage.user_id,
            "your images (finished after a restart):",
            files(),
            job_id=usage.job_id,
            **fields,
        )
        if message is not None:
            log_job_event("delivered", usage.job_id, kind="imagine", via="channel_after_restart")
            await mark_delivered(session_factory, usage.job_id, message.jump_url)
