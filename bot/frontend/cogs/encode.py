"""/stylecode encode: turn an uploaded picture into a stylecode (the picture itself is not kept).

The command joins the `/stylecode` group that the styles cog owns, so load this cog after that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontend import embeds
from bot.frontend.actions.delivery import deliver
from bot.frontend.actions.encode import encode_attachment
from bot.frontend.attachments import check_attachment
from bot.frontend.errors import defer_with_placeholder
from bot.frontend.views import encode_view

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot


@app_commands.command(name="encode", description="Turn a picture into a stylecode.")
@app_commands.describe(
    image="The picture whose style you want (PNG, JPEG, WebP or GIF).",  # the size limit is a setting
    name="Also save the code to the registry under this name.",
)
async def encode(
    interaction: discord.Interaction,
    image: discord.Attachment,
    name: app_commands.Range[str, 3, 32] | None = None,
) -> None:
    bot: StylecodesBot = interaction.client  # type: ignore[assignment]
    # Type and size come with the interaction: refuse before deferring or downloading anything.
    check_attachment(image, bot.resources.attachment_policy)
    await defer_with_placeholder(interaction)
    encoded = await encode_attachment(bot, interaction, image)
    interaction.extras["placeholder"] = False
    # In the channel instead if encoding outlived the token (a long queue), like every result.
    await deliver(
        interaction,
        files=lambda: [embeds.png_file(encoded.thumbnail_png, "source.png")],
        channel_text="here is your stylecode:",
        embed=embeds.encode_embed(encoded.code, source_filename=encoded.filename),
        view=encode_view(encoded.code),
    )
    if name is not None:
        await bot.styles.save(interaction, name=name, code=encoded.code.canonical)


def _stylecode_group(bot: StylecodesBot) -> app_commands.Group:
    group = bot.tree.get_command("stylecode")
    if not isinstance(group, app_commands.Group):
        raise RuntimeError("load bot.frontend.cogs.styles (which owns /stylecode) before bot.frontend.cogs.encode")
    return group


class Encode(commands.Cog):
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        _stylecode_group(self.bot).add_command(encode)

    async def cog_unload(self) -> None:
        group = self.bot.tree.get_command("stylecode")
        if isinstance(group, app_commands.Group):  # else the styles cog went first, taking the group along
            group.remove_command("encode")


async def setup(bot: StylecodesBot) -> None:
    await bot.add_cog(Encode(bot))
