"""Per-guild defaults for /imagine, read by the bot and edited with /settings."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import atomic
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
    """Change some settings (None = leave as is); values are checked before anything is written."""
    low, high = STRENGTH_RANGE
    if default_strength is not None and not low <= default_strength <= high:
        raise InvalidSettingError(f"The default strength must be between {low} and {high}, got {default_strength}.")
    low_steps, high_steps = STEPS_RANGE
    if default_steps is not None and (
        not isinstance(default_steps, int) or not low_steps <= default_steps <= high_steps
    ):
        raise InvalidSettingError(
            f"The default steps must be a whole number between {low_steps} and {high_steps}, got {default_steps}."
        )
    async with atomic(session):
        settings = await session.scalar(
            select(GuildSettings).where(GuildSettings.guild_id == guild_id).with_for_update()
        )
        if settings is None:
            settings = GuildSettings(guild_id=guild_id, **DEFAULTS)
            session.add(settings)
        if default_strength is not None:
            settings.default_strength = float(default_strength)
        if default_steps is not None:
            settings.default_steps = default_steps
        if allow_nsfw_outside_nsfw_channels is not None:
            settings.allow_nsfw_outside_nsfw_channels = bool(allow_nsfw_outside_nsfw_channels)
        settings.updated_at = utcnow()
    return settings
