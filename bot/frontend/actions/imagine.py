"""/imagine and the buttons on its result: queue a generation (recorded in the usage history first), and
rebuild a finished job's request for Reroll (a fresh seed) and Variations (the next seeds).

Commands, buttons and modals all go through `Generations` (`bot.generations`), so a reroll behaves exactly
like /imagine. The queued job is followed in the background (`progress.follow`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from sqlalchemy.ext.asyncio import AsyncSession

import registry
from bot.frontend import embeds
from bot.frontend.actions.delivery import edit_quietly
from bot.frontend.actions.progress import follow
from bot.frontend.errors import UserError
from bot.frontend.options import ImagineOptions, ResolvedStyle
from bot.jobs import ImagineJob, consecutive_seeds, new_job_id
from registry.guild_settings import DEFAULTS as GUILD_DEFAULTS
from stylecodes.checks import MAX_SEED
from stylecodes.codec import parse_code
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot

log = logging.getLogger(__name__)

VARIATIONS = 4  # images the Variations button makes


class Generations:
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot

    @property
    def _resources(self):
        return self.bot.resources

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
            style = await self.bot.styles.resolve(options.code, user_id=user_id, guild_id=guild_id)
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
        await edit_quietly(interaction, content=queued)
        spoiler_ok = _is_nsfw_channel(interaction.channel) or defaults.allow_nsfw_outside_nsfw_channels
        self.bot.spawn(follow(self.bot, interaction, handle, summary, spoiler_ok, queued), name=f"job-{job.job_id}")
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

    async def _set_status(self, job_id: str, status: str, **fields) -> None:
        async with self._resources.session_factory() as session:
            try:
                await registry.set_usage_status(session, job_id, status, **fields)
            except registry.RegistryError as exc:
                log.warning("could not update usage %s: %s", job_id, exc)

    @staticmethod
    async def _guild_settings(session: AsyncSession, guild_id: int | None) -> registry.GuildSettings:
        if guild_id is None:  # a DM: the defaults
            return registry.GuildSettings(guild_id=0, **GUILD_DEFAULTS)
        return await registry.get_guild_settings(session, guild_id)


def _is_nsfw_channel(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False
