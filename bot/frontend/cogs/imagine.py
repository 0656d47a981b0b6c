"""/imagine: paint a prompt, optionally in a style (code, name, name@rev, a mix, or a reference picture)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontend.actions.encode import encode_attachment
from bot.frontend.actions.styles import style_autocomplete
from bot.frontend.attachments import check_attachment
from bot.frontend.errors import UserError, defer_with_placeholder
from bot.frontend.options import ImagineOptions, ResolvedStyle
from stylecodes.checks import MAX_SEED

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot


class Imagine(commands.Cog):
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot

    @app_commands.command(description="Paint a prompt, optionally in a style.")
    @app_commands.describe(
        prompt="What to paint",
        code="A stylecode, a style name (name or name@3), or a mix like `neon-noir::2 C_d_AAI_rQglIvUb1_fC1::1`",
        style_image="Or a picture whose style to use (encoded first; the picture is not kept)",
        strength="How strongly the style steers the image, 0-1.5 (server default: usually 0.9)",
        negative="What to avoid",
        seed="Same seed + same settings = same image",
        steps="Denoising steps (server default: usually 20)",
        guidance="Prompt guidance scale",
        count="How many images, 1-4",
    )
    @app_commands.autocomplete(code=style_autocomplete)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        code: str | None = None,
        style_image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.0, 1.5] | None = None,
        negative: app_commands.Range[str, 0, 1000] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        guidance: app_commands.Range[float, 0.0, 20.0] = 3.0,
        count: app_commands.Range[int, 1, 4] = 1,
    ) -> None:
        # Everything checkable from the payload alone is checked before acknowledging.
        if code and style_image:
            raise UserError("Give either `code` or `style_image`, not both.")
        if style_image is not None:
            check_attachment(style_image, self.bot.resources.attachment_policy)
        await defer_with_placeholder(interaction)
        style = None
        if style_image is not None:
            encoded = await encode_attachment(self.bot, interaction, style_image)
            style = ResolvedStyle(encoded.code, encoded.code.canonical)
        options = ImagineOptions(
            prompt=prompt,
            code=code,
            strength=strength,
            negative_prompt=negative or "",
            seed=seed,
            steps=steps,
            guidance_scale=guidance,
            count=count,
        )
        await self.bot.generations.imagine(interaction, options, style=style)


async def setup(bot: StylecodesBot) -> None:
    await bot.add_cog(Imagine(bot))
