"""/stylecode: the community registry in Discord (save, update, show, browse, search, similar, history,
mix, random, decode, fork, delete, favourite). `/stylecode encode` lives in its own cog."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

import registry
from bot import embeds
from bot.errors import UserError, defer_with_placeholder, post_in_channel, token_expired, unexpected_error
from bot.generation import PreviewFailedError
from bot.jobs import JobRejectedError, QueueFullError
from bot.views import browse_view, encode_view, open_style_view
from registry.models import TAG_MAX, Visibility
from registry.names import TAG_MIN, normalise_tags
from stylecodes.codec import random_code
from stylecodes.versions import UnservedVersionError

if TYPE_CHECKING:
    from bot.app import StylecodesBot

log = logging.getLogger(__name__)

PAGE_SIZE = 5  # styles per browse page
MAX_PAGE = 500  # browse follows keyset cursors page by page; deep pages are what search is for


def _bot(interaction: discord.Interaction) -> StylecodesBot:
    return interaction.client  # type: ignore[return-value]


def _session(interaction: discord.Interaction):
    return _bot(interaction).resources.session_factory()


async def _respond(interaction: discord.Interaction, *, ephemeral: bool = False, **fields: Any) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(ephemeral=ephemeral, **fields)
    else:
        await interaction.response.send_message(ephemeral=ephemeral, **fields)


def _note(note: str) -> str:
    return embeds.clip(embeds.escape(note), 50)  # ten revisions fit in a field


def _use_line(usage: registry.Usage) -> str:
    """One generation in /stylecode history. The prompt is someone else's text: escaped, on one line."""
    prompt = embeds.escape(embeds.clip(" ".join(usage.prompt.split()), 60))
    link = f" · [image]({usage.message_link})" if usage.message_link else ""
    return f"<@{usage.user_id}> · {usage.status} · {prompt}{link}"


def _style_line(style: registry.Style) -> str:
    tags = " ".join(f"#{t}" for t in style.tag_list)
    return f"**{style.name}** · v{style.version} · {style.use_count} uses · ♥ {style.favourite_count} {tags}".rstrip()


# --- shared with the buttons and modals -----------------------------------------------------------------


async def save_style(
    interaction: discord.Interaction,
    *,
    name: str,
    code: str,
    description: str = "",
    tags: str = "",
    visibility: str = "public",
) -> None:
    """Create a style from `code`, reply, then have the worker render its preview grid."""
    user = interaction.user
    async with _session(interaction) as session:
        revision = await registry.create_style(
            session,
            name=name,
            code=code,
            owner_id=user.id,
            guild_id=interaction.guild_id,
            visibility=visibility,
            description=description or "",
            tags=tags or "",
            owner_name=user.display_name,
        )
        reference, revision_id, style_code = revision.reference, revision.id, revision.code
    await _announce_revision(interaction, f"Saved `{reference}`", revision_id, style_code)


async def _announce_revision(interaction: discord.Interaction, title: str, revision_id: int, code: str) -> None:
    from stylecodes.codec import parse_code

    embed = discord.Embed(title=title, description=embeds.code_block(code), colour=embeds.BRAND)
    embed.set_footer(text="Rendering the preview grid…")
    try:
        if interaction.response.is_done():
            message = await interaction.followup.send(embed=embed, wait=True)
        else:
            callback = await interaction.response.send_message(embed=embed)
            message = callback.resource
    except discord.HTTPException as exc:
        if not token_expired(exc):  # after a long encode (`/stylecode encode name:`): the style is saved
            raise
        message = await post_in_channel(interaction, "saved your style:", embed=embed)
    bot = _bot(interaction)
    bot.spawn(_attach_preview(bot, message, embed, revision_id, parse_code(code), interaction.user.id),
              name=f"preview-{revision_id}")  # fmt: skip


def preview_problem(error: BaseException) -> str:
    """Why a saved revision has no preview grid, for the footer where the grid would be."""
    if isinstance(error, QueueFullError):
        return f"the bot was busy ({error.queue_cap} jobs waiting) when it was saved."
    if isinstance(error, JobRejectedError):  # any other refusal at submit: its own words
        return f"it was not queued. {error}"
    if isinstance(error, UnservedVersionError):
        return f"stylecodes of version {error.version} are not served here, so none can be rendered."
    if isinstance(error, PreviewFailedError):
        return f"the worker could not render it: {error.reason}"
    return unexpected_error(error, "rendering a preview grid") + "."


async def _attach_preview(
    bot: StylecodesBot, message: Any, embed: discord.Embed, revision_id: int, code, user_id
) -> None:
    """Render the grid and put it on the announcement; the style is saved whatever happens here."""
    files = []
    try:
        preview = await bot.generations.render_preview(revision_id, code, user_id=user_id)
    except Exception as exc:
        log.info("no preview for revision %d: %s", revision_id, exc)
        embed.set_footer(text=embeds.clip(f"No preview grid: {preview_problem(exc)}", embeds.FOOTER_MAX))
    else:
        embed.remove_footer()
        files = [discord.File(io.BytesIO(preview.grid_webp), filename="preview.webp")]
        embed.set_image(url="attachment://preview.webp")
    try:
        await message.edit(embed=embed, attachments=files)
    except discord.HTTPException as exc:  # the token expired: /stylecode show has it
        log.info("could not attach the preview of revision %d: %s", revision_id, exc)


async def show_style(interaction: discord.Interaction, reference: str, *, ephemeral: bool = False) -> None:
    user_id, guild_id = interaction.user.id, interaction.guild_id
    async with _session(interaction) as session:
        revision = await registry.resolve_reference(session, reference, user_id=user_id, guild_id=guild_id)
        style = revision.style
        revisions = await registry.list_revisions(session, style.name, user_id=user_id, guild_id=guild_id)
        preview = await registry.get_revision_preview(session, revision.id)
    from stylecodes.codec import parse_code

    code = parse_code(revision.code)
    embed = discord.Embed(title=revision.reference, description=embeds.code_block(code), colour=embeds.BRAND)
    if style.description:
        description = embeds.clip(embeds.escape(style.description), embeds.FIELD_VALUE_MAX)
        embed.add_field(name="Description", value=description, inline=False)
    embed.add_field(name="Author", value=f"<@{style.owner_id}>")
    embed.add_field(name="Uses", value=str(style.use_count))
    embed.add_field(name="Favourites", value=str(style.favourite_count))
    embed.add_field(name="Encoder version", value=str(code.version))
    embed.add_field(name="Visibility", value=style.visibility)
    if style.tag_list:
        embed.add_field(name="Tags", value=" ".join(f"#{t}" for t in style.tag_list))
    listed = revisions[-10:]
    if all(r.number != revision.number for r in listed):  # an old revision: list it too
        listed = [r for r in revisions if r.number == revision.number] + listed
    lines = [
        f"{'→ ' if r.number == revision.number else ''}@{r.number} `{r.code}` {_note(r.note)}".rstrip() for r in listed
    ]
    embed.add_field(name=f"Revisions ({len(revisions)})", value=embeds.join_within(lines), inline=False)
    files = []
    if preview:
        files = [discord.File(io.BytesIO(preview), filename="preview.webp")]
        embed.set_image(url="attachment://preview.webp")
    await _respond(interaction, ephemeral=ephemeral, embed=embed, files=files, view=encode_view(code))


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


async def browse_message(
    interaction: discord.Interaction, *, sort: str, tag: str | None, page: int, cursor: str | None = None
) -> dict[str, Any]:
    """The embed and view of browse page `page` (0-based).

    The listing is public, so it holds what anyone in this channel may see (public styles and this
    server's), never the invoker's private ones, and is the same whoever turns the page. With
    `cursor` (where page `page` starts, carried by the ▶ button) it is one query; without, the keyset
    cursors are followed from the first page.
    """
    guild_id = interaction.guild_id
    async with _session(interaction) as session:
        if cursor is not None:
            result = await registry.browse(
                session, user_id=None, guild_id=guild_id, sort=sort, tag=tag, cursor=cursor, limit=PAGE_SIZE
            )
        else:
            result = None
            for index in range(min(page, MAX_PAGE) + 1):
                result = await registry.browse(
                    session, user_id=None, guild_id=guild_id, sort=sort, tag=tag, cursor=cursor, limit=PAGE_SIZE
                )
                page = index
                if result.next_cursor is None:
                    break
                cursor = result.next_cursor
    assert result is not None
    title = f"Styles · {sort}" + (f" · #{tag}" if tag else "")
    embed = discord.Embed(title=title, colour=embeds.BRAND)
    if result.items:
        embed.description = "\n".join(_style_line(style) for style in result.items)
    else:
        embed.description = "No styles here yet. Save one with `/stylecode save`."
    embed.set_footer(text=f"Page {page + 1}")
    names = [style.name for style in result.items]
    return {"embed": embed, "view": browse_view(sort, tag, page, next_cursor=result.next_cursor, names=names)}


async def style_name_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    async with _session(interaction) as session:
        names = await registry.autocomplete_names(
            session, current, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
    return [app_commands.Choice(name=name, value=name) for name in names]


async def style_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Complete the last term of a style or mix (`neon-noir::2 cy` -> `neon-noir::2 cyberpunk`)."""
    head, _, last = current.rpartition(" ")
    reference, sep, _ = last.partition("::")
    if sep:  # the user is typing a weight; nothing to complete
        return []
    async with _session(interaction) as session:
        names = await registry.autocomplete_names(
            session, reference, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
    choices = []
    for name in names:
        value = f"{head} {name}".strip()
        if len(value) <= 100:  # Discord's limit on a choice
            choices.append(app_commands.Choice(name=value, value=value))
    return choices[:25]


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
        await save_style(
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
        await _announce_revision(interaction, f"Updated: `{reference}`", revision_id, new_code)

    @app_commands.command(description="Show a style: code, revisions, author, uses and preview.")
    @app_commands.describe(name="`name` or `name@3`")
    @app_commands.autocomplete(name=style_name_autocomplete)
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        await show_style(interaction, name)

    @app_commands.command(description="Browse the registry page by page.")
    @app_commands.describe(tag="One tag, e.g. neon")
    async def browse(self, interaction: discord.Interaction, sort: Sort = "popular", tag: str | None = None) -> None:
        message = await browse_message(interaction, sort=sort, tag=browse_tag(tag), page=0)
        await interaction.response.send_message(**message)

    @app_commands.command(description="Search names, descriptions and tags.")
    async def search(self, interaction: discord.Interaction, query: str) -> None:
        async with _session(interaction) as session:  # a public reply: what anyone here may see
            styles = await registry.search(session, query, user_id=None, guild_id=interaction.guild_id, limit=10)
        if not styles:
            raise UserError(f"No style matches `{query[:80]}`. Try fewer or shorter words, or `/stylecode browse`.")
        embed = discord.Embed(title=embeds.clip(f"Search: {query}", embeds.TITLE_MAX), colour=embeds.BRAND)
        embed.description = embeds.join_within([_style_line(style) for style in styles], embeds.DESCRIPTION_MAX)
        await interaction.response.send_message(embed=embed, view=open_style_view([s.name for s in styles]))

    @app_commands.command(description="Styles whose code is closest to a code or a style.")
    @app_commands.describe(style="A stylecode or a style name")
    @app_commands.autocomplete(style=style_autocomplete)
    async def similar(self, interaction: discord.Interaction, style: str) -> None:
        await defer_with_placeholder(interaction)  # the first search of a process builds the latent index
        resolved = await self.bot.generations.resolve_style(
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
        lines = [f"{_style_line(item.style)} · distance {item.distance:.2f}" for item in found]
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
        resolved = await self.bot.generations.resolve_style(
            styles, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
        embed = discord.Embed(
            title="Mixed stylecode", description=embeds.code_block(resolved.code), colour=embeds.BRAND
        )
        embed.add_field(name="Mix", value=embeds.clip(resolved.label, embeds.FIELD_VALUE_MAX))
        await interaction.response.send_message(embed=embed, view=encode_view(resolved.code))

    @app_commands.command(description="A random stylecode: every level equally likely.")
    async def random(self, interaction: discord.Interaction) -> None:
        code = random_code(self.bot.settings.model_version)
        embed = discord.Embed(title="Random stylecode", description=embeds.code_block(code), colour=embeds.BRAND)
        await interaction.response.send_message(embed=embed, view=encode_view(code))

    @app_commands.command(description="Show a code's encoder version and its 20 levels.")
    @app_commands.describe(code="A stylecode (or a style name)")
    async def decode(self, interaction: discord.Interaction, code: str) -> None:
        resolved = await self.bot.generations.resolve_style(
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
        await _announce_revision(interaction, f"Forked `{source}` as `{reference}`", revision_id, code)

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
