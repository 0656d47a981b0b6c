"""Per-guild defaults for /imagine, read by the bot and edited with /settings."""

from __future__ import annotations

from numbers import Integral, Real

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import atomic, insert
from .errors import InvalidSettingError
from .models import GuildSettings, utcnow

STRENGTH_RANGE = (0.0, 1.5)  # the engine's accepted style strength
STEPS_RANGE = (1, 100)
DEFAULTS = {"default_strength": 0.9, "default_steps": 20, "allow_nsfw_outside_nsfw_channels": False}


async def get_guild_settings(session: AsyncSession, guild_id: int) -> GuildSettings:
    """The guild's settings; a guild that never changed them gets the defaults (not written)."""
    settings = await session.scalar(select(GuildSettings).where(GuildSettings.guild_id == guild_id))
    return settings if settings is not None else GuildSettings(guild_id=guild_id, updated_at=utcnow(), **DEFAULTS)


async def update_guild_settings(
    session: AsyncSession,
    guild_id: int,
    *,
    default_strength: float | None = None,
    default_steps: int | None = None,
    allow_nsfw_outside_nsfw_channels: bool | None = None,
) -> GuildSettings:
    """Change some settings (None = leave as is); values are checked before anything is written.

    Safe under concurrency, first write included: the defaults row is inserted with ``ON CONFLICT DO
    NOTHING`` (a racing first write waits for the other's insert), then locked and updated.
    """
    low, high = STRENGTH_RANGE
    if default_strength is not None and (
        isinstance(default_strength, bool)
        or not isinstance(default_strength, Real)
        or not low <= default_strength <= high  # also refuses NaN
    ):
        raise InvalidSettingError(
            f"The default strength must be a number between {low} and {high}, got {default_strength!r}."
        )
    low_steps, high_steps = STEPS_RANGE
    if default_steps is not None and (
        isinstance(default_steps, bool)
        or not isinstance(default_steps, Integral)
        or not low_steps <= default_steps <= high_steps
    ):
        raise InvalidSettingError(
            f"The default steps must be a whole number between {low_steps} and {high_steps}, got {default_steps!r}."
        )
    if allow_nsfw_outside_nsfw_channels is not None and not isinstance(allow_nsfw_outside_nsfw_channels, bool):
        raise InvalidSettingError(
            f"The NSFW setting is on or off (True or False), got {allow_nsfw_outside_nsfw_channels!r}."
        )
    async with atomic(session):
        await session.execute(
            insert(session, GuildSettings)
            .values(guild_id=guild_id, updated_at=utcnow(), **DEFAULTS)
            .on_conflict_do_nothing(index_elements=[GuildSettings.guild_id])
        )
        settings = await session.scalar(
            select(GuildSettings)
            .where(GuildSettings.guild_id == guild_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if default_strength is not None:
            settings.default_strength = float(default_strength)
        if default_steps is not None:
            settings.default_steps = int(default_steps)
        if allow_nsfw_outside_nsfw_channels is not None:
            settings.allow_nsfw_outside_nsfw_channels = allow_nsfw_outside_nsfw_channels
        settings.updated_at = utcnow()
    return settings
