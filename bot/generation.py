"""The work behind /imagine, /stylecode encode and their buttons: resolve the style, queue the job,
follow it with throttled progress edits, and deliver the result (to the channel if the token expired
or Discord keeps failing; the user is told in words if even that fails).

Commands, buttons and modals all go through `Generations`, so a reroll behaves exactly like /imagine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import discord
from sqlalchemy.ext.asyncio import AsyncSession

import registry
from bot import embeds
from bot.attachments import download
from bot.errors import UserError, post_in_channel, token_expired, unexpected_error
from bot.jobs import (
    MAX_SEED,
    TERMINAL_EVENTS,
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
    log_job_event,
    new_job_id,
)
from registry.guild_settings import DEFAULTS as GUILD_DEFAULTS
from registry.names import parse_reference
from stylecodes.codec import CodeError, StyleCode, mix_codes, parse_code, parse_mix
from stylecodes.images import load_image
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle

if TYPE_CHECKING:
    from bot.app import StylecodesBot
    from bot.dispatch.base import JobHandle

log = logging.getLogger(__name__)

VARIATIONS = 4  # images the Variations button makes
# A dropped connection to Discord is tried again after these pauses. (discord.py itself retries
# Discord's 5xx answers five times over ~25 s, and waits out 429s, before raising.)
RETRY_DELAYS_S = (0.5, 2.0)
CONNECTION_ERRORS = (aiohttp.ClientError, OSError)  # OSError includes TimeoutError

T = TypeVar("T")


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


class PreviewFailedError(Exception):
    """The worker could not render a revision's preview grid; `reason` is its user-facing reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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


class Generations:
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot

    @property
    def _resources(self):
        return self.bot.resources

    # --- styles ----------------------------------------------------------------------------------
    async def resolve_style(self, text: str, *, user_id: int | None, guild_id: int | None) -> ResolvedStyle:
        """A raw or legacy code, `name`, `name@rev`, or a weighted mix of them (`neon-noir::2 C_d_...1::1`)."""
        terms = text.split()
        if not terms:
            raise UserError("The style is empty: give a stylecode, a style name, or a mix like `a::2 b::1`.")
        if len(terms) == 1 and "::" not in terms[0]:
            return await self._resolve_one(terms[0], user_id=user_id, guild_id=guild_id)
        # A mix: resolve each name to its code, then let the codec parse the weight and mix.
        weighted: list[tuple[StyleCode, float]] = []
        for term in terms:
            reference, sep, weight = term.partition("::")
            code = (await self._resolve_one(reference, user_id=user_id, guild_id=guild_id)).code
            try:
                weighted += parse_mix(f"{code.canonical}{sep}{weight}")
            except CodeError as error:  # the code is valid, so the weight is not: say so in the user's words
                raise CodeError(str(error).replace(code.canonical, reference, 1), hint=False) from None
        return ResolvedStyle(code=mix_codes(weighted), label=" ".join(terms))

    async def _resolve_one(self, reference: str, *, user_id: int | None, guild_id: int | None) -> ResolvedStyle:
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
            log_job_event("failure_shown", job.job_id, kind="encode", code=event.code)
            raise UserError(event.reason)
        assert isinstance(event, JobDone) and isinstance(event.payload, EncodeResult)
        log_job_event("delivered", job.job_id, kind="encode")
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
                    styles=(CodeStyle(style.code, strength),) if style is not None else (),
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
        queued = embeds.queued_text(handle.position)
        await self._edit_quietly(interaction, content=queued)
        spoiler_ok = _is_nsfw_channel(interaction.channel) or defaults.allow_nsfw_outside_nsfw_channels
        self.bot.spawn(self._follow(interaction, handle, summary, spoiler_ok, queued), name=f"job-{job.job_id}")
        return job.job_id

    async def options_from_job(self, job_id: str) -> tuple[ImagineOptions, ResolvedStyle | None]:
        """The options a finished job was made with (for Reroll and Variations)."""
        async with self._resources.session_factory() as session:
            try:
                usage = await registry.get_usage(session, job_id)
            except registry.UsageNotFoundError:
                raise UserError(
                    "The request these images were made from is no longer available, so they can't be rerolled "
                    "or varied. Run `/imagine` again with the prompt and seed shown on them."
                ) from None
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
        shown: str,
    ) -> None:
        """Queue position and progress (throttled: Discord allows ~5 edits per 5 s per channel), then
        the outcome. `shown` is what the message says now (the "Queued" edit has just been made)."""
        edits = ProgressEdits(
            lambda fields: self._edit_quietly(interaction, **fields),
            self._resources.settings.progress_interval_s,
            shown=shown,
        )
        outcome = None
        problem = "its progress stopped arriving before it finished"
        try:
            async for event in handle.events():
                if isinstance(event, TERMINAL_EVENTS):
                    outcome = event
                else:
                    edits.offer(_progress_fields(event))
        except Exception as error:  # the event stream broke (a transport error), or a bug
            problem = unexpected_error(error, f"following job {handle.job_id}")
        finally:
            await edits.close()  # nothing of the progress may land after the outcome
        job_id = handle.job_id
        if isinstance(outcome, JobDone):
            assert isinstance(outcome.payload, ImagineResult)
            await self._deliver_result(interaction, job_id, summary, outcome.payload, spoiler_ok)
        elif isinstance(outcome, JobFailed):
            message = await self.deliver(interaction, content=f"❌ {outcome.reason}", job_id=job_id)
            if message is not None:
                log_job_event("failure_shown", job_id, code=outcome.code)
                await self._mark_delivered(job_id)
        else:
            log_job_event("lost_track", job_id, problem=problem)
            await self.deliver(
                interaction, content=f"❌ I lost track of your job: {problem}. Please try again.", job_id=job_id
            )

    async def _deliver_result(
        self,
        interaction: discord.Interaction,
        job_id: str,
        summary: embeds.GenerationSummary,
        result: ImagineResult,
        spoiler_ok: bool,
    ) -> None:
        files, fields = self._result_message(job_id, interaction.user.id, summary, result, spoiler_ok)
        message = await self.deliver(
            interaction, files=files, channel_text="your images are ready:", job_id=job_id, **fields
        )
        if message is not None:
            log_job_event("delivered", job_id, kind="imagine", channel_id=message.channel.id, message_id=message.id)
            await self._mark_delivered(job_id, message.jump_url)

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

        flagged = [bool(nsfw) for nsfw in result.nsfw]
        kept = [i for i, bad in enumerate(flagged) if spoiler_ok or not bad]

        def files() -> list[discord.File]:
            return [embeds.png_file(result.images_png[i], f"image_{i + 1}.png", spoiler=flagged[i]) for i in kept]

        withheld = len(flagged) - len(kept)
        embed = embeds.result_embed(summary, warnings=result.warnings, withheld=withheld)
        view = result_view(job_id, requester_id=requester_id, code=summary.code)
        return files, {"embed": embed, "view": view}

    async def deliver(
        self,
        interaction: discord.Interaction,
        *,
        content: str | None = None,
        files: Callable[[], list[discord.File]] | None = None,
        channel_text: str = "here is your result:",
        job_id: str | None = None,
        **fields: Any,
    ) -> discord.Message | None:
        """Show an outcome on the interaction's original response, whatever Discord does meanwhile.

        `files` is a factory: a failed send consumes the files. In order:
        1. Edit the original response. discord.py retries Discord's 5xx answers (five times, ~25 s)
           and waits out 429s; a dropped connection is retried here (`RETRY_DELAYS_S`).
        2. If that fails (the token expired after 15 minutes, or Discord keeps failing), post in the
           channel, mentioning the user, with `content` or `channel_text`.
        3. Files too large for Discord (413) are left out and the user is told so, with the rest.
        4. If nothing could be posted, the user is told in words where that still works.
        Returns the message that shows the outcome, or None. Never raises for Discord's failures.
        """

        def make_files() -> list[discord.File]:
            return files() if files is not None else []

        routes: list[tuple[str, Callable[[], Awaitable[discord.Message]]]] = [
            (
                "the original response",
                lambda: interaction.edit_original_response(content=content, attachments=make_files(), **fields),
            ),
            (
                "the channel",
                lambda: post_in_channel(interaction, content or channel_text, files=make_files(), **fields),
            ),
        ]
        problem: BaseException | None = None
        for where, send in routes:
            try:
                return await _retrying(send)
            except discord.HTTPException as exc:
                if exc.status == 413 and files is not None:
                    notice = _too_large_text(make_files())
                    return await self.deliver(
                        interaction, content=notice, channel_text=notice, job_id=job_id, **fields
                    )
                problem = exc
                if token_expired(exc):
                    log.info(
                        "event=token_expired job_id=%s interaction=%s: posting in the channel", job_id, interaction.id
                    )
                    continue
            except CONNECTION_ERRORS as exc:
                problem = exc
            log.warning("could not show an outcome on %s of %s: %s", where, interaction.id, _problem_text(problem))
        assert problem is not None
        log.error(
            "event=delivery_failed job_id=%s interaction=%s: %s",
            job_id,
            interaction.id,
            _problem_text(problem),
            exc_info=problem,
        )
        notice = (
            f"❌ Your request finished, but Discord would not let me post the result ({_problem_text(problem)}). "
            "Please try again in a minute."
        )
        try:
            await _retrying(lambda: interaction.followup.send(notice, ephemeral=True))
        except (discord.HTTPException, *CONNECTION_ERRORS):
            with contextlib.suppress(discord.HTTPException, *CONNECTION_ERRORS):
                await _retrying(lambda: post_in_channel(interaction, notice))
        return None

    async def _edit_quietly(self, interaction: discord.Interaction, **fields) -> None:
        """A progress edit: worth trying, not worth failing over (the token may have expired)."""
        try:
            await interaction.edit_original_response(**fields)
        except (discord.HTTPException, *CONNECTION_ERRORS) as exc:
            log.debug("progress edit failed for %s: %s", interaction.id, exc)

    async def _set_status(self, job_id: str, status: str, **fields) -> None:
        async with self._resources.session_factory() as session:
            try:
                await registry.set_usage_status(session, job_id, status, **fields)
            except registry.RegistryError as exc:
                log.warning("could not update usage %s: %s", job_id, exc)

    async def _mark_delivered(self, job_id: str, link: str | None = None) -> None:
        """The user has seen the outcome (at `link`, for /stylecode history): a restart will not post it again."""
        async with self._resources.session_factory() as session:
            try:
                await registry.mark_usage_delivered(session, job_id, message_link=link)
            except registry.RegistryError as exc:
                log.warning("event=mark_delivered_failed job_id=%s: %s", job_id, exc)

    @staticmethod
    async def _guild_settings(session: AsyncSession, guild_id: int | None) -> registry.GuildSettings:
        if guild_id is None:  # a DM: the defaults
            return registry.GuildSettings(guild_id=0, **GUILD_DEFAULTS)
        return await registry.get_guild_settings(session, guild_id)

    # --- previews --------------------------------------------------------------------------------
    async def render_preview(self, revision_id: int, code: StyleCode, *, user_id: int) -> PreviewResult:
        """Queue the four-prompt preview grid of a saved revision; the worker stores it.

        Raises what `submit` raises (the queue is full, an unserved version), and `PreviewFailedError`
        when the worker could not render it.
        """
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
            log.warning("event=preview_failed job_id=%s revision_id=%d: %s", job.job_id, revision_id, event.reason)
            raise PreviewFailedError(event.reason)
        assert isinstance(event, JobDone) and isinstance(event.payload, PreviewResult)
        log_job_event("delivered", job.job_id, kind="preview", revision_id=revision_id)
        return event.payload

    # --- restarts --------------------------------------------------------------------------------
    async def recover_unfinished(self) -> None:
        """Jobs queued or running when the bot stopped: resumed (the result is posted in their channel),
        or failed with the reason and the user told. See `bot.dispatch.recovery`."""
        from bot.dispatch.recovery import recover_unfinished, shard_owner

        settings = self._resources.settings
        report = await recover_unfinished(
            self._resources.session_factory,
            self._resources.dispatcher,
            self._notify_recovered,
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

    async def _notify_recovered(self, usage: registry.Usage, text: str) -> None:
        """Tell the user, in the job's channel, what became of a job found at restart."""
        message = await self._notify_channel(usage.channel_id, usage.user_id, text, job_id=usage.job_id)
        if message is not None:
            await self._mark_delivered(usage.job_id)

    async def _on_resumed(self, usage: registry.Usage, handle: JobHandle) -> None:
        self.bot.spawn(self._follow_resumed(usage, handle), name=f"resumed-{usage.job_id}")

    async def _follow_resumed(self, usage: registry.Usage, handle: JobHandle) -> None:
        """The interaction token died with the old process: post the outcome in the job's channel."""
        event = await handle.result()
        if isinstance(event, JobFailed):
            await self._notify_recovered(usage, f"your job failed: {event.reason}")
            return
        assert isinstance(event, JobDone) and isinstance(event.payload, ImagineResult)
        style_label = usage.code
        if usage.revision_id is not None:  # a named style: `name@rev`, as on every other result
            async with self._resources.session_factory() as session:
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
        files, fields = self._result_message(usage.job_id, usage.user_id, summary, event.payload, spoiler_ok=False)
        message = await self._notify_channel(
            usage.channel_id,
            usage.user_id,
            "your images (finished after a restart):",
            files(),
            job_id=usage.job_id,
            **fields,
        )
        if message is not None:
            log_job_event("delivered", usage.job_id, kind="imagine", via="channel_after_restart")
            await self._mark_delivered(usage.job_id, message.jump_url)

    async def _notify_channel(
        self,
        channel_id: int | None,
        user_id: int,
        text: str,
        files: list[discord.File] | None = None,
        *,
        job_id: str,
        **fields: Any,
    ) -> discord.Message | None:
        if not channel_id:
            log.warning("event=no_channel job_id=%s user=%d: %s", job_id, user_id, text)
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
            log.warning(
                "event=channel_post_failed job_id=%s user=%d channel=%d", job_id, user_id, channel_id, exc_info=True
            )
            return None


async def _retrying(send: Callable[[], Awaitable[T]]) -> T:
    """`send()`, tried again after a short pause when the connection to Discord drops."""
    for delay in RETRY_DELAYS_S:
        try:
            return await send()
        except CONNECTION_ERRORS as exc:
            log.info("connection to Discord failed (%s); retrying in %.1f s", _problem_text(exc), delay)
            await asyncio.sleep(delay)
    return await send()


def _problem_text(problem: BaseException | None) -> str:
    if isinstance(problem, discord.HTTPException):
        return f"Discord answered {problem.status}" + (f": {embeds.clip(problem.text, 200)}" if problem.text else "")
    return f"the connection to Discord failed ({type(problem).__name__})"


def _too_large_text(files: list[discord.File]) -> str:
    size = sum(len(getattr(f.fp, "getbuffer", lambda: b"")()) for f in files)
    shown = f"{size / (1024 * 1024):.1f} MB" if size >= 100 * 1024 else f"{max(size // 1024, 1)} KB"
    return (
        f"❌ Your images are ready, but Discord refused them as too large ({shown} in all). "
        "Ask for fewer at a time (`count`)."
    )


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
