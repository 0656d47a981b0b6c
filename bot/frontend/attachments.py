"""Uploaded images: checked from the interaction's metadata first, then downloaded from Discord's CDN.

Everything that can be refused without a download is refused before one (content type, declared
size, host). The download itself stops at the size limit too, since the declared size is only a claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.config import Settings
from bot.frontend.errors import AttachmentError

# Where Discord serves attachments. Anything else could be an SSRF attempt or a tracker.
DISCORD_CDN_HOSTS: frozenset[str] = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
# What stylecodes.images.load_image decodes.
IMAGE_CONTENT_TYPES: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
# STYLECODES_MAX_ATTACHMENT_BYTES's default; `python -m bot` passes the configured value.
MAX_ATTACHMENT_BYTES: int = Settings.model_fields["max_attachment_bytes"].default


@dataclass(frozen=True)
class AttachmentPolicy:
    max_bytes: int = MAX_ATTACHMENT_BYTES
    hosts: frozenset[str] = DISCORD_CDN_HOSTS
    schemes: frozenset[str] = frozenset({"https"})  # tests serve the CDN host names over plain http


def check_attachment(attachment: discord.Attachment, policy: AttachmentPolicy) -> None:
    """Refuse what we can from the metadata alone; raises `AttachmentError`."""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type not in IMAGE_CONTENT_TYPES:
        shown = f"`{content_type}`" if content_type else "an unknown type"
        raise AttachmentError(
            f"`{attachment.filename}` is {shown}, not an image I can read. Attach a PNG, JPEG, WebP or GIF picture."
        )
    if attachment.size > policy.max_bytes:
        raise AttachmentError(
            f"`{attachment.filename}` is {_megabytes(attachment.size)}; the limit is {_megabytes(policy.max_bytes)}. "
            "Attach a smaller or more compressed picture."
        )
    url = urlsplit(attachment.url)
    if url.scheme not in policy.schemes or (url.hostname or "").lower() not in policy.hosts:
        raise AttachmentError("That attachment is not hosted on Discord's CDN; upload the picture to Discord directly.")


async def download(session: aiohttp.ClientSession, attachment: discord.Attachment, policy: AttachmentPolicy) -> bytes:
    """Check `attachment`, then fetch it, never reading more than the limit; raises `AttachmentError`."""
    check_attachment(attachment, policy)
    too_large = AttachmentError(
        f"`{attachment.filename}` is larger than {_megabytes(policy.max_bytes)}. Attach a smaller picture."
    )
    try:
        async with session.get(attachment.url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=30)) as reply:
            if reply.status != 200:
                raise AttachmentError(
                    f"Discord's CDN answered {reply.status} for `{attachment.filename}`; upload the picture again."
                )
            if reply.content_length is not None and reply.content_length > policy.max_bytes:
                raise too_large
            chunks, received = [], 0
            async for chunk in reply.content.iter_chunked(64 * 1024):
                received += len(chunk)
                if received > policy.max_bytes:
                    raise too_large
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AttachmentError(
            f"Could not download `{attachment.filename}` from Discord ({type(exc).__name__}); try again."
        ) from exc
    return b"".join(chunks)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
