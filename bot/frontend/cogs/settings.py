"""/settings: a server's defaults for /imagine, and whether flagged images may appear outside
age-restricted channels. Server admins (Manage Server) only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

import registry
from bot.frontend import embeds

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot


def settings_embed(settings: registry.GuildSettings) -> discord.Embed:
    embed = discord.Embed(title="Server settings", colour=embeds.BRAND)
    embed.add_field(name="Default strength", value=f"{settings.default_strength:g}")
    embed.add_field(name="Default steps", value=str(settings.default_steps))
    nsfw = "spoilered" if settings.allow_nsfw_outside_nsfw_channels else "withheld"
    embed.add_field(
        name="Flagged images outside age-restricted channels", value=f"{nsfw} (always spoilered inside them)"
    )
    return embed


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Settings(commands.GroupCog, group_name="settings", group_description="This server's /imagine defaults."):
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        # default_permissions only hides the command; server owners can override it, so check again.
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    @app_commands.command(description="Show this server's settings.")
    async def show(self, interaction: discord.Interaction) -> None:
        async with self.bot.resources.session_factory() as session:
            settings = await registry.get_guild_settings(session, interaction.guild_id)
        await interaction.response.send_message(embed=settings_embed(settings), ephemeral=True)

    @app_commands.command(name="set", description="Change this server's settings (options left out stay).")
    @app_commands.describe(
        default_strength="Style strength when /imagine leaves it out, 0-1.5",
        default_steps="Denoising steps when /imagine leaves it out, 1-100",
        allow_nsfw_outside_nsfw_channels="Post flagged images (spoilered) outside age-restricted channels",
    )
    async def set_(
        self,
        interaction: discord.Interaction,
        default_strength: app_commands.Range[float, 0.0, 1.5] | None = None,
        default_steps: app_commands.Range[int, 1, 100] | None = None,
        allow_nsfw_outside_nsfw_channels: bool | None = None,
    ) -> None:
        async with self.bot.resources.session_factory() as session:
            settings = await registry.update_guild_settings(
                session,
                interaction.guild_id,
                default_strength=default_strength,
                default_steps=default_steps,
                allow_nsfw_outside_nsfw_channels=allow_nsfw_outside_nsfw_channels,
            )
        await interaction.response.send_message("Saved.", embed=settings_embed(settings), ephemeral=True)


async def setup(bot: StylecodesBot) -> None:
    await bot.add_cog(Settings(bot))
