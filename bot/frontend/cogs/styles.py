"""/stylecode: the community registry in Discord (save, update, show, browse, search, similar, history,
mix, random, decode, fork, delete, favourite). `/stylecode encode` lives in its own cog."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

import registry
from bot.frontend import embeds
from bot.frontend.actions.styles import style_autocomplete, style_line, style_name_autocomplete
from bot.frontend.errors import UserError, defer_with_placeholder
from bot.frontend.views import encode_view, open_style_view
from registry.models import TAG_MAX, Visibility
from registry.names import TAG_MIN, normalise_tags
from stylecodes.prior import has_prior, sample_codes

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot


def _session(interaction: discord.Interaction):
    return interaction.client.resources.session_factory()  # type: ignore[attr-defined]


def _use_line(usage: registry.Usage) -> str:
    """One generation in /stylecode history. The prompt is someone else's text: escaped, on one line."""
    prompt = embeds.escape(embeds.clip(" ".join(usage.prompt.split()), 60))
    link = f" · [image]({usage.message_link})" if usage.message_link else ""
    return f"<@{usage.user_id}> · {usage.status} · {prompt}{link}"


def browse_tag(text: str | None) -> str | None:
    """The one tag to browse by, spelt as the registry stores tags (`#Neon` -> `neon`); None for none."""
    if text is None or not text.strip():
        return None
    tags = normalise_tags(text).split()  # InvalidNameError (user-facing) for a malformed tag
    if not tags:
        raise UserError(
            f"`{embeds.clip(text.strip(), 40)}` is not a tag: tags are {TAG_MIN}-{TAG_MAX} characters of a-z, 0-9 "
            "and `-`, e.g. `neon`."
        )
    if len(tags) > 1:
        raise UserError(f"Browse one tag at a time: {' or '.join(f'`{tag}`' for tag in tags)}.")
    return tags[0]


Sort = Literal["new", "popular", "trending", "favourites"]


class Styles(commands.GroupCog, group_name="stylecode", group_description="Stylecodes and the shared style registry."):
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(description="Save a stylecode to the registry under a name.")
    @app_commands.describe(
        name="3-32 characters: a-z, 0-9 and -", code="The stylecode", tags="Separated by spaces or commas"
    )
    async def save(
        self,
        interaction: discord.Interaction,
        name: str,
        code: str,
        description: str | None = None,
        tags: str | None = None,
        visibility: Visibility = "public",
    ) -> None:
        await self.bot.styles.save(
            interaction, name=name, code=code, description=description or "", tags=tags or "", visibility=visibility
        )

    @app_commands.command(description="Give one of your styles a new code (a new revision).")
    @app_commands.autocomplete(name=style_name_autocomplete)
    async def update(self, interaction: discord.Interaction, name: str, code: str, note: str | None = None) -> None:
        async with _session(interaction) as session:
            revision = await registry.add_revision(
                session, name, code=code, user_id=interaction.user.id, note=note or ""
            )
            reference, revision_id, new_code = revision.reference, revision.id, revision.code
        await self.bot.styles.announce(interaction, f"Updated: `{reference}`", revision_id, new_code)

    @app_commands.command(description="Show a style: code, revisions, author, uses and preview.")
    @app_commands.describe(name="`name` or `name@3`")
    @app_commands.autocomplete(name=style_name_autocomplete)
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        await self.bot.styles.show(interaction, name)

    @app_commands.command(description="Browse the registry page by page.")
    @app_commands.describe(tag="One tag, e.g. neon")
    async def browse(self, interaction: discord.Interaction, sort: Sort = "popular", tag: str | None = None) -> None:
        message = await self.bot.styles.browse_page(interaction, sort=sort, tag=browse_tag(tag), page=0)
        await interaction.response.send_message(**message)

    @app_commands.command(description="Search names, descriptions and tags.")
    async def search(self, interaction: discord.Interaction, query: str) -> None:
        async with _session(interaction) as session:  # a public reply: what anyone here may see
            styles = await registry.search(session, query, user_id=None, guild_id=interaction.guild_id, limit=10)
        if not styles:
            raise UserError(f"No style matches `{query[:80]}`. Try fewer or shorter words, or `/stylecode browse`.")
        embed = discord.Embed(title=embeds.clip(f"Search: {query}", embeds.TITLE_MAX), colour=embeds.BRAND)
        embed.description = embeds.join_within([style_line(style) for style in styles], embeds.DESCRIPTION_MAX)
        await interaction.response.send_message(embed=embed, view=open_style_view([s.name for s in styles]))

    @app_commands.command(description="Styles whose code is closest to a code or a style.")
    @app_commands.describe(style="A stylecode or a style name")
    @app_commands.autocomplete(style=style_autocomplete)
    async def similar(self, interaction: discord.Interaction, style: str) -> None:
        await defer_with_placeholder(interaction)  # the first search of a process builds the latent index
        resolved = await self.bot.styles.resolve(
            style, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
        async with _session(interaction) as session:
            found = await registry.similar_styles(
                session,
                resolved.code,
                user_id=None,  # a public reply: what anyone here may see
                guild_id=interaction.guild_id,
                k=10,
                exclude_style_id=resolved.style_id,  # not the style asked about
            )
        if not found:
            raise UserError("No other style of this encoder version is in the registry yet.")
        embed = discord.Embed(title=embeds.clip(f"Styles like {resolved.label}", embeds.TITLE_MAX), colour=embeds.BRAND)
        lines = [f"{style_line(item.style)} · distance {item.distance:.2f}" for item in found]
        embed.description = embeds.join_within(lines, embeds.DESCRIPTION_MAX)
        interaction.extras["placeholder"] = False
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(description="Recent generations with a style, and its uses per revision and per day.")
    @app_commands.autocomplete(name=style_name_autocomplete)
    async def history(self, interaction: discord.Interaction, name: str) -> None:
        async with _session(interaction) as session:
            history = await registry.style_history(
                session, name, user_id=interaction.user.id, guild_id=interaction.guild_id
            )
        embed = discord.Embed(title=f"History of {history.style.name}", colour=embeds.BRAND)
        per_revision = [f"@{n}: {c}" for n, c in history.uses_per_revision.items()]
        embed.add_field(
            name="Uses per revision",
            value=embeds.join_within(per_revision, separator=", ") or "no finished uses yet",
            inline=False,
        )
        days = [f"{day.isoformat()}: {count}" for day, count in history.uses_per_day[-10:]]
        embed.add_field(name="Uses per day (last 30 days)", value=embeds.join_within(days) or "none", inline=False)
        recent = [_use_line(usage) for usage in history.recent]
        embed.add_field(name="Recent", value=embeds.join_within(recent) or "none", inline=False)
        await interaction.response.send_message(embed=embed)

    @app_commands.command(description='Mix codes or styles, weighted: "neon-noir::2 C_d_AAI_rQglIvUb1_fC1::1".')
    @app_commands.autocomplete(styles=style_autocomplete)
    async def mix(self, interaction: discord.Interaction, styles: str) -> None:
        resolved = await self.bot.styles.resolve(
            styles, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
        embed = discord.Embed(
            title="Mixed stylecode", description=embeds.code_block(resolved.code), colour=embeds.BRAND
        )
        embed.add_field(name="Mix", value=embeds.clip(resolved.label, embeds.FIELD_VALUE_MAX))
        await interaction.response.send_message(embed=embed, view=encode_view(resolved.code))

    @app_commands.command(description="A random stylecode, drawn from where real styles' codes lie.")
    @app_commands.describe(uniform="Every level equally likely instead (most such codes match no real picture)")
    async def random(self, interaction: discord.Interaction, uniform: bool = False) -> None:
        version = self.bot.settings.model_version
        learned = not uniform and has_prior(version)  # a version without a learned prior draws uniformly
        [code] = sample_codes(version, 1, uniform=not learned)
        embed = discord.Embed(title="Random stylecode", description=embeds.code_block(code), colour=embeds.BRAND)
        how = "the model's learned prior of real styles" if learned else "uniform: every level equally likely"
        embed.set_footer(text=f"Drawn from {how}.")
        await interaction.response.send_message(embed=embed, view=encode_view(code))

    @app_commands.command(description="Show a code's encoder version and its 20 levels.")
    @app_commands.describe(code="A stylecode (or a style name)")
    async def decode(self, interaction: discord.Interaction, code: str) -> None:
        resolved = await self.bot.styles.resolve(
            code, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
        chart = embeds.levels_chart_png(resolved.code)
        await interaction.response.send_message(
            embed=embeds.decode_embed(resolved.code), file=embeds.png_file(chart, "levels.png")
        )

    @app_commands.command(description="Copy someone's style (or a revision of it) into a new style of yours.")
    @app_commands.describe(
        source="`name` or `name@3`",
        new_name="The name of your copy",
        visibility="Who may use the copy (default: the same as the original's)",
    )
    @app_commands.autocomplete(source=style_name_autocomplete)
    async def fork(
        self, interaction: discord.Interaction, source: str, new_name: str, visibility: Visibility | None = None
    ) -> None:
        async with _session(interaction) as session:
            revision = await registry.fork_style(
                session,
                source,
                new_name=new_name,
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                visibility=visibility,
                owner_name=interaction.user.display_name,
            )
            reference, revision_id, code = revision.reference, revision.id, revision.code
        await self.bot.styles.announce(interaction, f"Forked `{source}` as `{reference}`", revision_id, code)

    @app_commands.command(description="Delete one of your styles (its name stays reserved for you).")
    @app_commands.autocomplete(name=style_name_autocomplete)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        async with _session(interaction) as session:
            style = await registry.delete_style(session, name, user_id=interaction.user.id)
        await interaction.response.send_message(f"Deleted `{style.name}`.", ephemeral=True)

    @app_commands.command(description="Add a style to your favourites, or remove it.")
    @app_commands.autocomplete(name=style_name_autocomplete)
    async def favourite(self, interaction: discord.Interaction, name: str) -> None:
        async with _session(interaction) as session:
            now_favourite = await registry.toggle_favourite(
                session, name, user_id=interaction.user.id, guild_id=interaction.guild_id
            )
        shown = registry.normalise_name(name.partition("@")[0])
        text = f"Added `{shown}` to your favourites." if now_favourite else f"Removed `{shown}` from your favourites."
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: StylecodesBot) -> None:
    await bot.add_cog(Styles(bot))
