"""The bot's one error handler, shared by the command tree, the persistent buttons and the modals.

Errors whose message is written for users (registry, codec, image, dispatch and the bot's own
`UserError`) are shown as they are, ephemerally. Anything else is logged with a reference id, and the
user is told something broke on our side, with that id.
"""

from __future__ import annotations

import logging
import uuid

import discord
from discord import app_commands

from bot.jobs import JobRejectedError
from registry.errors import RegistryError
from stylecodes.codec import CodeError
from stylecodes.images import ImageError
from stylecodes.versions import UnservedVersionError

log = logging.getLogger(__name__)

# Errors whose str() is a complete, user-facing explanation.
USER_FACING_ERRORS: tuple[type[BaseException], ...] = (
    CodeError,
    ImageError,
    RegistryError,
    JobRejectedError,
    UnservedVersionError,
)


class UserError(Exception):
    """A problem with what the user asked for; the message says what and how to fix it."""


class AttachmentError(UserError):
    """An uploaded file is not an image we accept, is too large, or is not on Discord's CDN."""


def user_message(error: BaseException) -> str | None:
    """The message to show for `error`, or None when it is a bug on our side."""
    if isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, (UserError, *USER_FACING_ERRORS)):
        return str(error)
    if isinstance(error, app_commands.MissingPermissions):
        missing = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return f"You need the {missing} permission to do that."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You can't use this here."
    return None


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user what went wrong, ephemerally, whatever state the interaction is in."""
    gate = getattr(interaction.client, "ack_gate", None)
    if gate is not None:
        gate.acknowledged(interaction)
    message = user_message(error)
    if message is None:
        reference = uuid.uuid4().hex[:8]
        log.error("unexpected error (ref %s) in %s", reference, _describe(interaction), exc_info=error)
        message = f"Something went wrong on our side (reference `{reference}`). Please try again later."
    else:
        log.info("user error in %s: %s", _describe(interaction), message)
    await send_ephemeral(interaction, message)


async def send_ephemeral(interaction: discord.Interaction, message: str) -> None:
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
            return
        if interaction.extras.get("placeholder"):
            # We deferred with a public "thinking..." message: drop it so the error stays private.
            interaction.extras["placeholder"] = False
            await interaction.delete_original_response()
        await interaction.followup.send(message, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not report an error to the user in %s", _describe(interaction), exc_info=True)


async def defer_with_placeholder(interaction: discord.Interaction) -> None:
    """Acknowledge within Discord's 3 s with a public "thinking..." message that errors may replace."""
    await interaction.response.defer(thinking=True)
    interaction.extras["placeholder"] = True
    gate = getattr(interaction.client, "ack_gate", None)
    if gate is not None:
        gate.acknowledged(interaction)
        await gate.wait_turn()  # let the other commands waiting for their acknowledgement go first


def _describe(interaction: discord.Interaction) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    custom_id = (interaction.data or {}).get("custom_id")
    return f"component {custom_id}" if custom_id else f"interaction {interaction.id}"
