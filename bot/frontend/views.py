"""Persistent buttons, menus and modals.

Every button and menu is a `DynamicItem`: its custom_id carries all the state it needs (a code, a job
id, a page), so it keeps working on old messages after the bot restarts. The bot registers them all
with `add_dynamic_items(*DYNAMIC_ITEMS)`. Errors go to the one handler in `bot.frontend.errors`.

Views import no action: they reach them through the bot object (`bot.generations`, `bot.styles`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

import discord
from discord import ui

from bot.frontend.errors import UserError, defer_with_placeholder, report_error
from bot.frontend.options import ImagineOptions
from stylecodes.codec import StyleCode

if TYPE_CHECKING:
    from bot.frontend.app import StylecodesBot

# The state a custom_id carries, as the group `key` of its template.
_CODE = r"(?P<key>[A-Za-z0-9_-]{20}[0-9])"
_JOB = r"(?P<key>[0-9a-f]{32})"
_USER = r"(?P<key>[0-9]{1,20})"


def _bot(interaction: discord.Interaction) -> StylecodesBot:
    return interaction.client  # type: ignore[return-value]


class _Guarded:
    """Route a component's errors to the one error handler (discord.py would only log them)."""

    async def callback(self, interaction: discord.Interaction) -> Any:
        try:
            await self.run(interaction)
        except Exception as error:
            await report_error(interaction, error)

    async def run(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError


class _KeyButton(_Guarded):
    """A persistent button whose custom_id is `sc:{ACTION}:{key}`: the one piece of state it needs (a code, a
    job id, a user id). Subclasses add `ui.DynamicItem[ui.Button]` with a template of that shape (its group
    `key`), their look, and `run`."""

    ACTION: ClassVar[str]
    LABEL: ClassVar[str]
    EMOJI: ClassVar[str]
    STYLE: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init__(self, key: str | int, *, label: str | None = None) -> None:
        button = ui.Button(
            label=label or self.LABEL, emoji=self.EMOJI, style=self.STYLE, custom_id=f"sc:{self.ACTION}:{key}"
        )
        super().__init__(button)  # type: ignore[call-arg]  # ui.DynamicItem's, next in the subclasses' order
        self.key = str(key)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str]):
        return cls(match["key"], label=item.label)


# --- modals --------------------------------------------------------------------------------------------


class _GuardedModal(ui.Modal):
    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_error(interaction, error)


class PromptModal(_GuardedModal, title="Imagine with this style"):
    prompt = ui.TextInput(label="Prompt", placeholder="a lighthouse at dusk", max_length=1000, custom_id="prompt")

    def __init__(self, code: str) -> None:
        super().__init__(custom_id=f"sc:prompt-modal:{code}")
        self.code = code

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await defer_with_placeholder(interaction)
        await _bot(interaction).generations.imagine(
            interaction, ImagineOptions(prompt=self.prompt.value, code=self.code)
        )


class SaveStyleModal(_GuardedModal, title="Save this style"):
    name = ui.TextInput(label="Name", placeholder="neon-noir", min_length=3, max_length=32, custom_id="name")
    description = ui.TextInput(
        label="Description", style=discord.TextStyle.paragraph, required=False, max_length=300, custom_id="description"
    )
    tags = ui.TextInput(label="Tags", placeholder="neon, noir, city", required=False, max_length=200, custom_id="tags")

    def __init__(self, code: str) -> None:
        super().__init__(custom_id=f"sc:save-modal:{code}")
        self.code = code

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await _bot(interaction).styles.save(
            interaction,
            name=self.name.value,
            code=self.code,
            description=self.description.value,
            tags=self.tags.value,
        )


# --- buttons on an encode reply ------------------------------------------------------------------------


class ImagineWithCodeButton(_KeyButton, ui.DynamicItem[ui.Button], template=rf"sc:imagine:{_CODE}"):
    ACTION, LABEL, EMOJI, STYLE = "imagine", "Imagine with it", "🎨", discord.ButtonStyle.primary

    async def run(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal(self.key))


class SaveCodeButton(_KeyButton, ui.DynamicItem[ui.Button], template=rf"sc:save:{_CODE}"):
    ACTION, LABEL, EMOJI = "save", "Save as…", "💾"  # "Save style" on an /imagine result

    async def run(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(SaveStyleModal(self.key))


def encode_view(code: StyleCode) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(ImagineWithCodeButton(code.canonical))
    view.add_item(SaveCodeButton(code.canonical))
    return view


# --- buttons on an /imagine result ---------------------------------------------------------------------


class RerollButton(_KeyButton, ui.DynamicItem[ui.Button], template=rf"sc:reroll:{_JOB}"):
    ACTION, LABEL, EMOJI, STYLE = "reroll", "Reroll", "🎲", discord.ButtonStyle.primary

    async def run(self, interaction: discord.Interaction) -> None:
        await defer_with_placeholder(interaction)
        await _bot(interaction).generations.reroll(interaction, self.key)


class VariationsButton(_KeyButton, ui.DynamicItem[ui.Button], template=rf"sc:vary:{_JOB}"):
    ACTION, LABEL, EMOJI = "vary", "Variations", "🔀"

    async def run(self, interaction: discord.Interaction) -> None:
        await defer_with_placeholder(interaction)
        await _bot(interaction).generations.variations(interaction, self.key)


class DeleteButton(_KeyButton, ui.DynamicItem[ui.Button], template=rf"sc:delete:{_USER}"):
    """Deletes the result message: the requester, or anyone who may manage messages in the channel."""

    ACTION, LABEL, EMOJI, STYLE = "delete", "Delete", "🗑️", discord.ButtonStyle.danger

    async def run(self, interaction: discord.Interaction) -> None:
        is_moderator = interaction.permissions.manage_messages
        if interaction.user.id != int(self.key) and not is_moderator:
            raise UserError("Only the person who asked for these images, or a moderator, can delete them.")
        await interaction.response.defer()  # acknowledges the click; @original is now the message it is on
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            if interaction.message is None:
                raise
            # Not deletable through the interaction (a result posted in the channel after the token expired):
            # it is the bot's own message, which the bot may delete without Manage Messages.
            await interaction.message.delete()


def result_view(job_id: str, *, requester_id: int, code: StyleCode | None) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(RerollButton(job_id))
    view.add_item(VariationsButton(job_id))
    if code is not None:
        view.add_item(SaveCodeButton(code.canonical, label="Save style"))
    view.add_item(DeleteButton(requester_id))
    return view


# --- browse: pages and a menu to open one ---------------------------------------------------------------


_CUSTOM_ID_MAX = 100  # Discord's limit


class BrowsePageButton(
    _Guarded,
    ui.DynamicItem[ui.Button],
    template=(
        r"sc:browse:(?P<sort>[a-z]+):(?P<tag>[a-z0-9-]*):(?P<page>[0-9]{1,4}):(?P<arrow>[<>])"
        r"(?::(?P<cursor>[A-Za-z0-9_-]+))?"
    ),
):
    """◀ or ▶ on a browse page. ▶ carries the registry's cursor of the page it opens when that fits in a
    custom_id, so the page is one query; otherwise (and for ◀) the page is found by following the
    cursors from the first page, after acknowledging the click."""

    def __init__(
        self, sort: str, tag: str, page: int, arrow: str, *, cursor: str | None = None, disabled: bool = False
    ) -> None:
        custom_id = f"sc:browse:{sort}:{tag}:{page}:{arrow}"
        if cursor is not None and len(custom_id) + 1 + len(cursor) <= _CUSTOM_ID_MAX:
            custom_id += f":{cursor}"
        else:
            cursor = None
        super().__init__(
            ui.Button(
                label="◀" if arrow == "<" else "▶",
                style=discord.ButtonStyle.secondary,
                custom_id=custom_id,
                disabled=disabled,
            )
        )
        self.sort, self.tag, self.page, self.cursor = sort, tag, page, cursor

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str]):
        return cls(match["sort"], match["tag"], int(match["page"]), match["arrow"], cursor=match["cursor"])

    async def run(self, interaction: discord.Interaction) -> None:
        walks = self.cursor is None and self.page > 0  # one query per page before this one
        if walks:
            await interaction.response.defer()  # Discord's 3 s: acknowledge, then edit the message
        message = await _bot(interaction).styles.browse_page(
            interaction, sort=self.sort, tag=self.tag or None, page=self.page, cursor=self.cursor
        )
        if walks:
            await interaction.edit_original_response(**message)
        else:
            await interaction.response.edit_message(**message)


class OpenStyleSelect(_Guarded, ui.DynamicItem[ui.Select], template=r"sc:open"):
    def __init__(self, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(
            ui.Select(
                custom_id="sc:open", placeholder="Open a style…", options=options or [discord.SelectOption(label="-")]
            )
        )

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Select, match: re.Match[str]):
        return cls(item.options)

    async def run(self, interaction: discord.Interaction) -> None:
        await _bot(interaction).styles.show(interaction, self.item.values[0], ephemeral=True)


def browse_view(sort: str, tag: str | None, page: int, *, next_cursor: str | None, names: list[str]) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(BrowsePageButton(sort, tag or "", max(page - 1, 0), "<", disabled=page == 0))
    view.add_item(BrowsePageButton(sort, tag or "", page + 1, ">", cursor=next_cursor, disabled=next_cursor is None))
    if names:
        view.add_item(OpenStyleSelect([discord.SelectOption(label=name, value=name) for name in names]))
    return view


def open_style_view(names: list[str]) -> ui.View:
    """Just the menu that opens one of `names` (search results)."""
    view = ui.View(timeout=None)
    view.add_item(OpenStyleSelect([discord.SelectOption(label=name, value=name) for name in names]))
    return view


DYNAMIC_ITEMS: tuple[type[ui.DynamicItem[Any]], ...] = (
    ImagineWithCodeButton,
    SaveCodeButton,
    RerollButton,
    VariationsButton,
    DeleteButton,
    BrowsePageButton,
    OpenStyleSelect,
)
