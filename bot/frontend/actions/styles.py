"""What commands and buttons do with the registry's styles (`bot.styles`): resolve what a user typed into a
code, save a style (with its preview grid), announce a new revision, show a style, and build browse pages.
Also the autocompletes of style names, which several commands share."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

import registry
from bot.frontend import embeds
from bot.frontend.actions.previews import attach_preview
from bot.frontend.errors import UserError, post_in_channel, token_expired
from bot.frontend.options import ResolvedStyle
from bot.frontend.views import browse_view, encode_view
from registry.names import parse_reference
from stylecodes.codec import CodeError, StyleCode, mix_codes, parse_code, parse_mix

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot

log = logging.getLogger(__name__)

PAGE_SIZE = 5  # styles per browse page
MAX_PAGE = 500  # browse follows keyset cursors page by page; deep pages are what search is for


def style_line(style: registry.Style) -> str:
    """One style in a listing (browse, search, similar)."""
    tags = " ".join(f"#{t}" for t in style.tag_list)
    return f"**{style.name}** · v{style.version} · {style.use_count} uses · ♥ {style.favourite_count} {tags}".rstrip()


def _note(note: str) -> str:
    return embeds.clip(embeds.escape(note), 50)  # ten revisions fit in a field


async def _respond(interaction: discord.Interaction, *, ephemeral: bool = False, **fields: Any) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(ephemeral=ephemeral, **fields)
    else:
        await interaction.response.send_message(ephemeral=ephemeral, **fields)


class StyleActions:
    def __init__(self, bot: StylecodesBot) -> None:
        self.bot = bot

    def _session(self):
        return self.bot.resources.session_factory()

    # --- resolving -------------------------------------------------------------------------------

    async def resolve(self, text: str, *, user_id: int | None, guild_id: int | None) -> ResolvedStyle:
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
            async with self._session() as session:
                revision = await registry.resolve_reference(session, reference, user_id=user_id, guild_id=guild_id)
            return ResolvedStyle(parse_code(revision.code), revision.reference, revision.id, revision.style_id)
        return ResolvedStyle(code, code.canonical)

    # --- saving ----------------------------------------------------------------------------------

    async def save(
        self,
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
        async with self._session() as session:
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
        await self.announce(interaction, f"Saved `{reference}`", revision_id, style_code)

    async def announce(self, interaction: discord.Interaction, title: str, revision_id: int, code: str) -> None:
        """Reply with a new revision's code at once; its preview grid is attached when the worker has made it."""
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
        user_id = interaction.user.id
        self.bot.spawn(
            attach_preview(self.bot, message, embed, revision_id, parse_code(code), user_id),
            name=f"preview-{revision_id}",
        )

    # --- showing and browsing --------------------------------------------------------------------

    async def show(self, interaction: discord.Interaction, reference: str, *, ephemeral: bool = False) -> None:
        user_id, guild_id = interaction.user.id, interaction.guild_id
        async with self._session() as session:
            revision = await registry.resolve_reference(session, reference, user_id=user_id, guild_id=guild_id)
            style = revision.style
            revisions = await registry.list_revisions(session, style.name, user_id=user_id, guild_id=guild_id)
            preview = await registry.get_revision_preview(session, revision.id)
        code = parse_code(revision.code)
        embed = discord.Embed(title=revision.reference, description=embeds.code_block(code), colour=embeds.BRAND)
        gallery = self.bot.resources.settings.gallery_url
        if gallery is not None and style.visibility == "public":  # the gallery shows public styles only
            embed.url = f"{gallery}/styles/{style.name}"
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
            f"{'→ ' if r.number == revision.number else ''}@{r.number} `{r.code}` {_note(r.note)}".rstrip()
            for r in listed
        ]
        embed.add_field(name=f"Revisions ({len(revisions)})", value=embeds.join_within(lines), inline=False)
        files = []
        if preview:
            files = [discord.File(io.BytesIO(preview), filename="preview.webp")]
            embed.set_image(url="attachment://preview.webp")
        await _respond(interaction, ephemeral=ephemeral, embed=embed, files=files, view=encode_view(code))

    async def browse_page(
        self, interaction: discord.Interaction, *, sort: str, tag: str | None, page: int, cursor: str | None = None
    ) -> dict[str, Any]:
        """The embed and view of browse page `page` (0-based).

        The listing is public, so it holds what anyone in this channel may see (public styles and this
        server's), never the invoker's private ones, and is the same whoever turns the page. With
        `cursor` (where page `page` starts, carried by the ▶ button) it is one query; without, the keyset
        cursors are followed from the first page.
        """
        guild_id = interaction.guild_id
        async with self._session() as session:
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
            embed.description = "\n".join(style_line(style) for style in result.items)
        else:
            embed.description = "No styles here yet. Save one with `/stylecode save`."
        embed.set_footer(text=f"Page {page + 1}")
        names = [style.name for style in result.items]
        return {"embed": embed, "view": browse_view(sort, tag, page, next_cursor=result.next_cursor, names=names)}


# --- autocompletes -----------------------------------------------------------------------------------------


async def style_name_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    async with interaction.client.resources.session_factory() as session:  # type: ignore[attr-defined]
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
    async with interaction.client.resources.session_factory() as session:  # type: ignore[attr-defined]
        names = await registry.autocomplete_names(
            session, reference, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
    choices = []
    for name in names:
        value = f"{head} {name}".strip()
        if len(value) <= 100:  # Discord's limit on a choice
            choices.append(app_commands.Choice(name=value, value=value))
    return choices[:25]
