"""Showing an outcome to its user whatever Discord does meanwhile: on the original response, else in the
channel, else in words where that still works; files too large for Discord are left out, with a note.

Also the message of a finished /imagine (images, embed, buttons) and the mark that its user has seen an
outcome, so a restart does not post it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import discord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import registry
from bot.frontend import embeds
from bot.frontend.errors import post_in_channel, token_expired
from bot.frontend.views import result_view
from bot.jobs import ImagineResult

log = logging.getLogger(__name__)

# A dropped connection to Discord is tried again after these pauses. (discord.py itself retries
# Discord's 5xx answers five times over ~25 s, and waits out 429s, before raising.)
RETRY_DELAYS_S = (0.5, 2.0)
CONNECTION_ERRORS = (aiohttp.ClientError, OSError)  # OSError includes TimeoutError

T = TypeVar("T")
Files = Callable[[], list[discord.File]]  # a factory: a failed send consumes the files


async def deliver(
    interaction: discord.Interaction,
    *,
    content: str | None = None,
    files: Files | None = None,
    channel_text: str = "here is your result:",
    job_id: str | None = None,
    **fields: Any,
) -> discord.Message | None:
    """Show an outcome on the interaction's original response, whatever Discord does meanwhile.

    In order:
    1. Edit the original response. discord.py retries Discord's 5xx answers (five times, ~25 s)
       and waits out 429s; a dropped connection is retried here (`RETRY_DELAYS_S`).
    2. If that fails (the token expired after 15 minutes, or Discord keeps failing), post in the
       channel, mentioning the user, with `content` or `channel_text`.
    3. Files too large for Discord (413) are left out and the user is told so, with the rest.
    4. If nothing could be posted, the user is told in words where that still works.
    Returns the message that shows the outcome, or None. Never raises for Discord's failures.
    """

    def make_files() -> list[discord.File]:
        return files() if files is not None else []

    routes: list[tuple[str, Callable[[], Awaitable[discord.Message]]]] = [
        (
            "the original response",
            lambda: interaction.edit_original_response(content=content, attachments=make_files(), **fields),
        ),
        (
            "the channel",
            lambda: post_in_channel(interaction, content or channel_text, files=make_files(), **fields),
        ),
    ]
    problem: BaseException | None = None
    for where, send in routes:
        try:
            return await _retrying(send)
        except discord.HTTPException as exc:
            if exc.status == 413 and files is not None:
                notice = _too_large_text(make_files())
                return await deliver(interaction, content=notice, channel_text=notice, job_id=job_id, **fields)
            problem = exc
            if token_expired(exc):
                log.info("event=token_expired job_id=%s interaction=%s: posting in the channel", job_id, interaction.id)
                continue
        except CONNECTION_ERRORS as exc:
            problem = exc
        log.warning("could not show an outcome on %s of %s: %s", where, interaction.id, _problem_text(problem))
    assert problem is not None
    log.error(
        "event=delivery_failed job_id=%s interaction=%s: %s",
        job_id,
        interaction.id,
        _problem_text(problem),
        exc_info=problem,
    )
    notice = (
        f"❌ Your request finished, but Discord would not let me post the result ({_problem_text(problem)}). "
        "Please try again in a minute."
    )
    try:
        await _retrying(lambda: interaction.followup.send(notice, ephemeral=True))
    except (discord.HTTPException, *CONNECTION_ERRORS):
        with contextlib.suppress(discord.HTTPException, *CONNECTION_ERRORS):
            await _retrying(lambda: post_in_channel(interaction, notice))
    return None


async def edit_quietly(interaction: discord.Interaction, **fields: Any) -> None:
    """A progress edit: worth trying, not worth failing over (the token may have expired)."""
    try:
        await interaction.edit_original_response(**fields)
    except (discord.HTTPException, *CONNECTION_ERRORS) as exc:
        log.debug("progress edit failed for %s: %s", interaction.id, exc)


async def post_to_channel(
    client: discord.Client,
    channel_id: int | None,
    user_id: int,
    text: str,
    files: list[discord.File] | None = None,
    *,
    job_id: str,
    **fields: Any,
) -> discord.Message | None:
    """Post in a channel known only by its id (no interaction left: after a restart), mentioning the user."""
    if not channel_id:
        log.warning("event=no_channel job_id=%s user=%d: %s", job_id, user_id, text)
        return None
    channel = client.get_partial_messageable(channel_id)
    try:
        return await channel.send(
            f"<@{user_id}> {text}",
            files=files or [],
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(user_id)]),
            **fields,
        )
    except discord.HTTPException:
        log.warning(
            "event=channel_post_failed job_id=%s user=%d channel=%d", job_id, user_id, channel_id, exc_info=True
        )
        return None


def result_message(
    job_id: str,
    requester_id: int,
    summary: embeds.GenerationSummary,
    result: ImagineResult,
    spoiler_ok: bool,
) -> tuple[Files, dict[str, Any]]:
    """The files (a factory) and the embed and buttons of a finished /imagine.

    Flagged images are spoilered where allowed (age-restricted channels, or the server allows it),
    else withheld.
    """
    flagged = [bool(nsfw) for nsfw in result.nsfw]
    kept = [i for i, bad in enumerate(flagged) if spoiler_ok or not bad]

    def files() -> list[discord.File]:
        return [embeds.png_file(result.images_png[i], f"image_{i + 1}.png", spoiler=flagged[i]) for i in kept]

    withheld = len(flagged) - len(kept)
    embed = embeds.result_embed(summary, warnings=result.warnings, withheld=withheld)
    view = result_view(job_id, requester_id=requester_id, code=summary.code)
    return files, {"embed": embed, "view": view}


async def mark_delivered(
    session_factory: async_sessionmaker[AsyncSession], job_id: str, link: str | None = None
) -> None:
    """The user has seen the outcome (at `link`, for /stylecode history): a restart will not post it again."""
    async with session_factory() as session:
        try:
            await registry.mark_usage_delivered(session, job_id, message_link=link)
        except registry.RegistryError as exc:
            log.warning("event=mark_delivered_failed job_id=%s: %s", job_id, exc)


async def _retrying(send: Callable[[], Awaitable[T]]) -> T:
    """`send()`, tried again after a short pause when the connection to Discord drops."""
    for delay in RETRY_DELAYS_S:
        try:
            return await send()
        except CONNECTION_ERRORS as exc:
            log.info("connection to Discord failed (%s); retrying in %.1f s", _problem_text(exc), delay)
            await asyncio.sleep(delay)
    return await send()


def _problem_text(problem: BaseException | None) -> str:
    if isinstance(problem, discord.HTTPException):
        return f"Discord answered {problem.status}" + (f": {embeds.clip(problem.text, 200)}" if problem.text else "")
    return f"the connection to Discord failed ({type(problem).__name__})"


def _too_large_text(files: list[discord.File]) -> str:
    size = sum(len(getattr(f.fp, "getbuffer", lambda: b"")()) for f in files)
    shown = f"{size / (1024 * 1024):.1f} MB" if size >= 100 * 1024 else f"{max(size // 1024, 1)} KB"
    return (
        f"❌ Your images are ready, but Discord refused them as too large ({shown} in all). "
        "Ask for fewer at a time (`count`)."
    )
