"""The work behind /imagine, /stylecode encode and their buttons: resolve the style, queue the job,
follow it with throttled progress edits, and deliver the result (to the channel if the token expired).

Commands, buttons and modals all go through `Generations`, so a reroll behaves exactly like /imagine.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import discord
from sqlalchemy.ext.asyncio import AsyncSession

import registry
from bot import embeds
from bot.attachments import download
from bot.errors import UserError
from bot.jobs import (
    MAX_SEED,
    EncodeJob,
    EncodeResult,
    ImagineJob,
    ImagineResult,
    JobDone,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    PreviewJob,
    PreviewResult,
    consecutive_seeds,
    new_job_id,
)
from registry.guild_settings import DEFAULTS as GUILD_DEFAULTS
from registry.names import parse_reference
from stylecodes.codec import CodeError, StyleCode, mix, parse_code
from stylecodes.images import load_image

if TYPE_CHECKING:
    from bot.app import StylecodesBot
    from bot.dispatch.base import JobHandle

log = logging.getLogger(__name__)

VARIATIONS = 4  # images the Variations button makes


@dataclass(frozen=True)
class ImagineOptions:
    """What the user asked /imagine for; None = the guild's default."""

    prompt: str
    code: str | None = None
    strength: float | None = None
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float = 3.0
    count: int = 1


@dataclass(frozen=True)
class ResolvedStyle:
    code: StyleCode
    label: str  # "name@rev", the mix as typed, or the canonical code
    revision_id: int | None = None  # a single named revision: usage history counts it for that style
    style_id: int | None = None


@dataclass(frozen=True)
class Encoded:
    code: StyleCode
    thumbnail_png: bytes
    filename: str


class Generations:
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot
        self._warned_unchecked: set[int] = set()

    @property
    def _resources(self):
        return self.bot.resources

    # --- styles ----------------------------------------------------------------------------------
    async def resolve_style(self, text: str, *, user_id: int, guild_id: int | None) -> ResolvedStyle:
        """A raw or legacy code, `name`, `name@rev`, or a weighted mix of them (`neon-noir::2 C_d_...1::1`)."""
        terms = text.split()
        if not terms:
            raise UserError("The style is empty: give a stylecode, a style name, or a mix like `a::2 b::1`.")
        if len(terms) == 1 and "::" not in terms[0]:
            return await self._resolve_one(terms[0], user_id=user_id, guild_id=guild_id)
        # A mix: resolve each name to its code, then let the codec parse the weights and mix.
        spelled = []
        for term in terms:
            reference, sep, weight = term.partition("::")
            code = (await self._resolve_one(reference, user_id=user_id, guild_id=guild_id)).code
            spelled.append(f"{code.canonical}{sep}{weight}")
        return ResolvedStyle(code=mix(" ".join(spelled)), label=" ".join(terms))

    async def _resolve_one(self, reference: str, *, user_id: int, guild_id: int | None) -> ResolvedStyle:
        try:
            code = parse_code(reference)
        except CodeError as code_error:
            try:
                parse_reference(reference)
            except registry.RegistryError:
                # Neither a code nor a name: the code's message says more (unless it was clearly a reference).
                if "@" in reference:
                    raise
                raise code_error from None
            async with self._resources.session_factory() as session:
                revision = await registry.resolve_reference(session, reference, user_id=user_id, guild_id=guild_id)
            return ResolvedStyle(parse_code(revision.code), revision.reference, revision.id, revision.style_id)
        return ResolvedStyle(code, code.canonical)

    # --- encode ----------------------------------------------------------------------------------
    async def encode_attachment(self, interaction: discord.Interaction, attachment: discord.Attachment) -> Encoded:
        """Download (from Discord's CDN only), check, and encode one picture. The picture is not kept."""
        resources = self._resources
        data = await download(resources.http_session, attachment, resources.attachment_policy)
        image = await asyncio.to_thread(load_image, data)
        thumbnail = await asyncio.to_thread(embeds.png_bytes, image, embeds.THUMBNAIL_SIZE)
        job = EncodeJob(new_job_id(), interaction.user.id, resources.settings.model_version, data)
        handle = await resources.dispatcher.submit(job)
        if handle.position > 1:
            await self._edit_quietly(interaction, content=f"Encoding… {embeds.queued_text(handle.position)}")
        event = await handle.result()
        if isinstance(event, JobFailed):
            raise UserError(event.reason)
        assert isinstance(event, JobDone) and isinstance(event.payload, EncodeResult)
        return Encoded(event.payload.codes[0], thumbnail, attachment.filename)

    # --- imagine ---------------------------------------------------------------------------------
    async def imagine(
        self,
        interaction: discord.Interaction,
        options: ImagineOptions,
        *,
        style: ResolvedStyle | None = None,
    ) -> str:
        """Queue a generation for an interaction that is already deferred; returns the job id.

        The job is followed in the background: progress edits, then the final message.
        """
        from stylecodes.engine import GenerationRequest  # the engine module imports torch

        settings = self._resources.settings
        user_id, guild_id = interaction.user.id, interaction.guild_id
        if style is None and options.code:
            style = await self.resolve_style(options.code, user_id=user_id, guild_id=guild_id)
        # One session for the settings read and the usage insert: the burst after a busy minute is DB-bound.
        async with self._resources.session_factory() as session:
            defaults = await self._guild_settings(session, guild_id)
            strength = defaults.default_strength if options.strength is None else options.strength
            steps = defaults.default_steps if options.steps is None else options.steps
            first = random.randint(0, MAX_SEED) if options.seed is None else options.seed
            seeds = consecutive_seeds(first, options.count)
            version = style.code.version if style is not None else settings.model_version
            requests = [
                GenerationRequest(
                    prompt=options.prompt,
                    seed=seed,
                    negative_prompt=options.negative_prompt,
                    style=style.code if style is not None else None,
                    strength=strength,
                    steps=steps,
                    guidance_scale=options.guidance_scale,
                    width=settings.image_size,
                    height=settings.image_size,
                )
                for seed in seeds
            ]
            channel_id = interaction.channel_id or 0
            job = ImagineJob(new_job_id(), user_id, guild_id, channel_id, version, requests)
            await registry.record_usage(
                session,
                job_id=job.job_id,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=options.prompt,
                negative_prompt=options.negative_prompt,
                seed=seeds[0],
                steps=steps,
                guidance_scale=options.guidance_scale,
                strength=strength,
                width=settings.image_size,
                height=settings.image_size,
                model_version=version,
                code=None if style is None or style.revision_id is not None else style.code.canonical,
                revision_id=None if style is None else style.revision_id,
                count=len(seeds),
            )
        try:
            handle = await self._resources.dispatcher.submit(job)
        except Exception as exc:
            await self._set_status(job.job_id, "cancelled", error=f"not queued: {exc}")
            raise
        summary = embeds.GenerationSummary(
            prompt=options.prompt,
            style_label=None if style is None else style.label,
            code=None if style is None else style.code,
            seeds=seeds,
            strength=strength,
            steps=steps,
            guidance_scale=options.guidance_scale,
            model_version=version,
            negative_prompt=options.negative_prompt,
        )
        interaction.extras["placeholder"] = False
        await self._edit_quietly(interaction, content=embeds.queued_text(handle.position))
        spoiler_ok = _is_nsfw_channel(interaction.channel) or defaults.allow_nsfw_outside_nsfw_channels
        self.bot.spawn(self._follow(interaction, handle, summary, spoiler_ok), name=f"job-{job.job_id}")
        return job.job_id

    async def options_from_job(self, job_id: str) -> tuple[ImagineOptions, ResolvedStyle | None]:
        """The options a finished job was made with (for Reroll and Variations)."""
        async with self._resources.session_factory() as session:
            usage = await registry.get_usage(session, job_id)
            revision = None
            if usage.revision_id is not None:
                revision = await registry.get_revision(session, usage.revision_id)
        options = ImagineOptions(
            prompt=usage.prompt,
            strength=usage.strength,
            negative_prompt=usage.negative_prompt,
            seed=usage.seed,
            steps=usage.steps,
            guidance_scale=usage.guidance_scale,
            count=usage.count,
        )
        style = None
        if revision is not None:
            style = ResolvedStyle(parse_code(revision.code), revision.reference, revision.id, revision.style_id)
        elif usage.code is not None:
            style = ResolvedStyle(parse_code(usage.code), usage.code)
        return options, style

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> str:
        options, style = await self.options_from_job(job_id)
        return await self.imagine(interaction, replace(options, seed=None), style=style)  # a fresh random seed

    async def variations(self, interaction: discord.Interaction, job_id: str) -> str:
        """The next seeds after the job's own: the same prompt and style, a fresh set of compositions."""
        options, style = await self.options_from_job(job_id)
        (next_seed,) = consecutive_seeds(options.seed + options.count, 1)
        return await self.imagine(interaction, replace(options, seed=next_seed, count=VARIATIONS), style=style)

    async def _follow(
        self,
        interaction: discord.Interaction,
        handle: JobHandle,
        summary: embeds.GenerationSummary,
        spoiler_ok: bool,
    ) -> None:
        interval = self._resources.settings.progress_interval_s
        last_edit = time.monotonic()  # the "Queued" edit has just been made
        async for event in handle.events():
            if isinstance(event, JobDone):
                assert isinstance(event.payload, ImagineResult)
                await self._deliver_result(interaction, handle.job_id, summary, event.payload, spoiler_ok)
            elif isinstance(event, JobFailed):
                await self._deliver(interaction, content=f"❌ {event.reason}")
            elif time.monotonic() - last_edit >= interval:  # Discord allows ~5 edits per 5 s per channel
                await self._edit_quietly(interaction, **_progress_fields(event))
                last_edit = time.monotonic()  # from the end of this edit, so edits arrive >= interval apart

    async def _deliver_result(
        self,
        interaction: discord.Interaction,
        job_id: str,
        summary: embeds.GenerationSummary,
        result: ImagineResult,
        spoiler_ok: bool,
    ) -> None:
        files, fields = self._result_message(job_id, interaction.user.id, summary, result, spoiler_ok)
        message = await self._deliver(interaction, content=None, files=files, **fields)
        if message is not None:
            await self._store_message_link(job_id, message.jump_url)

    def _result_message(
        self,
        job_id: str,
        requester_id: int,
        summary: embeds.GenerationSummary,
        result: ImagineResult,
        spoiler_ok: bool,
    ) -> tuple[Callable[[], list[discord.File]], dict]:
        """Files (a factory: a failed send consumes them) and the embed and buttons of a finished job.

        Flagged images are spoilered where allowed (age-restricted channels, or the server allows it),
        else withheld.
        """
        from bot.views import result_view

        if any(nsfw is None for nsfw in result.nsfw) and summary.model_version not in self._warned_unchecked:
            self._warned_unchecked.add(summary.model_version)
            log.warning("model version %d has no safety checker: its images are not screened", summary.model_version)
        flagged = [bool(nsfw) for nsfw in result.nsfw]
        kept = [i for i, bad in enumerate(flagged) if spoiler_ok or not bad]

        def files() -> list[discord.File]:
            return [embeds.png_file(result.images_png[i], f"image_{i + 1}.png", spoiler=flagged[i]) for i in kept]

        withheld = len(flagged) - len(kept)
        embed = embeds.result_embed(summary, warnings=result.warnings, withheld=withheld)
        view = result_view(job_id, requester_id=requester_id, code=summary.code)
        return files, {"embed": embed, "view": view}

    async def _deliver(self, interaction: discord.Interaction, *, files=None, **fields) -> discord.Message | None:
        """Edit the original response; if its token expired, post in the channel instead."""
        try:
            return await interaction.edit_original_response(attachments=files() if files else [], **fields)
        except discord.NotFound:
            pass
        except discord.HTTPException as exc:
            if exc.status != 401:
                raise
        log.info("event=token_expired interaction=%s: posting in the channel", interaction.id)
        channel = self.bot.get_partial_messageable(interaction.channel_id or 0)
        mention = interaction.user.mention
        content = fields.pop("content", None)
        return await channel.send(
            content=f"{mention} {content or 'your images are ready:'}",
            files=files() if files else [],
            allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
            **fields,
        )

    async def _edit_quietly(self, interaction: discord.Interaction, **fields) -> None:
        """A progress edit: worth trying, not worth failing over (the token may have expired)."""
        try:
            await interaction.edit_original_response(**fields)
        except discord.HTTPException as exc:
            log.debug("progress edit failed for %s: %s", interaction.id, exc)

    async def _set_status(self, job_id: str, status: str, **fields) -> None:
        async with self._resources.session_factory() as session:
            try:
                await registry.set_usage_status(session, job_id, status, **fields)
            except registry.RegistryError as exc:
                log.warning("could not update usage %s: %s", job_id, exc)

    async def _store_message_link(self, job_id: str, link: str) -> None:
        """Where the images were posted, for /stylecode history (the worker has marked the job done already)."""
        async with self._resources.session_factory() as session:
            await registry.set_usage_message_link(session, job_id, link)

    @staticmethod
    async def _guild_settings(session: AsyncSession, guild_id: int | None) -> registry.GuildSettings:
        if guild_id is None:  # a DM: the defaults
            return registry.GuildSettings(guild_id=0, **GUILD_DEFAULTS)
        return await registry.get_guild_settings(session, guild_id)

    # --- previews --------------------------------------------------------------------------------
    async def render_preview(self, revision_id: int, code: StyleCode, *, user_id: int) -> PreviewResult | None:
        """Queue the four-prompt preview grid of a saved revision; the worker stores it. None if it failed."""
        settings = self._resources.settings
        job = PreviewJob(
            job_id=new_job_id(),
            user_id=user_id,
            revision_id=revision_id,
            code=code.canonical,
            steps=settings.preview_steps,
            size=settings.image_size,
        )
        handle = await self._resources.dispatcher.submit(job)
        event = await handle.result()
        if isinstance(event, JobFailed):
            log.warning("preview of revision %d failed: %s", revision_id, event.reason)
            return None
        assert isinstance(event, JobDone) and isinstance(event.payload, PreviewResult)
        return event.payload

    # --- restarts --------------------------------------------------------------------------------
    async def recover_unfinished(self) -> None:
        """Jobs queued or running when the bot stopped: resumed (the result is posted in their channel),
        or failed with the reason and the user told. See `bot.dispatch.recovery`."""
        from bot.dispatch.recovery import recover_unfinished

        report = await recover_unfinished(
            self._resources.session_factory,
            self._resources.dispatcher,
            lambda usage, text: self._notify_channel(usage.channel_id, usage.user_id, text),
            on_resumed=self._on_resumed,
        )
        if report.reattached or report.resubmitted or report.failed:
            log.info(
                "event=recovered reattached=%d resubmitted=%d failed=%d",
                len(report.reattached),
                len(report.resubmitted),
                len(report.failed),
            )

    async def _on_resumed(self, usage: registry.Usage, handle: JobHandle) -> None:
        self.bot.spawn(self._follow_resumed(usage, handle), name=f"resumed-{usage.job_id}")

    async def _follow_resumed(self, usage: registry.Usage, handle: JobHandle) -> None:
        """The interaction token died with the old process: post the outcome in the job's channel."""
        event = await handle.result()
        if isinstance(event, JobFailed):
            await self._notify_channel(usage.channel_id, usage.user_id, f"your job failed: {event.reason}")
            return
        assert isinstance(event, JobDone) and isinstance(event.payload, ImagineResult)
        summary = embeds.GenerationSummary(
            prompt=usage.prompt,
            style_label=usage.code,
            code=None if usage.code is None else parse_code(usage.code),
            seeds=consecutive_seeds(usage.seed, usage.count),
            strength=usage.strength,
            steps=usage.steps,
            guidance_scale=usage.guidance_scale,
            model_version=usage.model_version,
            negative_prompt=usage.negative_prompt,
        )
        # The channel's age restriction is unknown here: withhold flagged images.
        files, fields = self._result_message(usage.job_id, usage.user_id, summary, event.payload, spoiler_ok=False)
        message = await self._notify_channel(
            usage.channel_id, usage.user_id, "your images (finished after a restart):", files(), **fields
        )
        if message is not None:
            await self._store_message_link(usage.job_id, message.jump_url)

    async def _notify_channel(
        self, channel_id: int | None, user_id: int, text: str, files: list[discord.File] | None = None, **fields: Any
    ) -> discord.Message | None:
        if not channel_id:
            log.warning("the job of user %d has no channel to report to: %s", user_id, text)
            return None
        channel = self.bot.get_partial_messageable(channel_id)
        try:
            return await channel.send(
                f"<@{user_id}> {text}",
                files=files or [],
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(user_id)]),
                **fields,
            )
        except discord.HTTPException:
            log.warning("could not tell user %d in channel %d about their job", user_id, channel_id, exc_info=True)
            return None


def _progress_fields(event: JobQueued | JobStarted | JobProgress) -> dict[str, Any]:
    if isinstance(event, JobQueued):
        return {"content": embeds.queued_text(event.position)}
    if isinstance(event, JobStarted):
        return {"content": "Painting…"}
    files = [] if event.preview_png is None else [embeds.png_file(event.preview_png, "preview.png")]
    return {"content": embeds.progress_text(event.step, event.total), "attachments": files}


def _is_nsfw_channel(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False
