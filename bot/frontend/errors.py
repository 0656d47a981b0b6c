"""The bot's one error handler, shared by the command tree, the persistent buttons and the modals.

Errors whose message is written for users (registry, codec, image, dispatch and the bot's own
`UserError`) are shown as they are, ephemerally. Anything else is logged with a reference id, and the
user is told something broke on our side, with that id. When the interaction's token has expired
(15 minutes), the message is posted in the channel instead, mentioning the user, so it is not lost.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

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


def unexpected_error(error: BaseException, where: str) -> str:
    """Log a bug with a reference id; returns "something went wrong on our side (reference `…`)"."""
    reference = uuid.uuid4().hex[:8]
    log.error("unexpected error (ref %s) in %s", reference, where, exc_info=error)
    return f"something went wrong on our side (reference `{reference}`)"


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user what went wrong, ephemerally, whatever state the interaction is in."""
    gate = getattr(interaction.client, "ack_gate", None)
    if gate is not None:
        gate.acknowledged(interaction)
    message = user_message(error)
    if message is None:
        problem = unexpected_error(error, _describe(interaction))
        message = f"{problem[:1].upper()}{problem[1:]}. Please try again later."
    else:
        log.info("user error in %s: %s", _describe(interaction), message)
    await send_ephemeral(interaction, message)


def token_expired(error: discord.HTTPException) -> bool:
    """Discord's answer to a webhook call with an interaction token past its 15 minutes (401 or 404)."""
    return isinstance(error, discord.NotFound) or error.status == 401


async def post_in_channel(interaction: discord.Interaction, text: str, **fields: Any) -> discord.Message:
    """Post in the interaction's channel, mentioning (and pinging) only its user: for when the
    interaction's token has expired, so nothing meant for them is lost."""
    channel = interaction.client.get_partial_messageable(interaction.channel_id or 0)
    return await channel.send(
        content=f"{interaction.user.mention} {text}",
        allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
        **fields,
    )


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
    except discord.HTTPException as exc:
        if token_expired(exc):
            try:
                await post_in_channel(interaction, message)
                return
            except discord.HTTPException:
                pass
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
