"""How the bot's replies look: embeds, small images drawn with PIL, and file attachments."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import discord
from PIL import Image, ImageDraw

from stylecodes.codec import LATENT_DIM, MAX_LEVEL, StyleCode
from stylecodes.images import png_bytes
from stylecodes.versions import VERSIONS

BRAND = discord.Colour(0x7B5CFF)
ERROR = discord.Colour(0xE5484D)
THUMBNAIL_SIZE = 160  # px, longest side of the source-image thumbnail on an encode reply

# Discord's limits on an embed (it refuses the whole message with 400 beyond them).
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Text someone typed, shown as typed: no markdown, masked links or @everyone."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def join_within(items: Sequence[str], limit: int = FIELD_VALUE_MAX, *, separator: str = "\n") -> str:
    """`items` joined while they fit in `limit` characters, then "… and N more" for the rest.

    Whole items only (a cut line could break a link or a code span); a single item longer than the
    limit is clipped.
    """
    kept: list[str] = []
    used = 0
    for index, item in enumerate(items):
        left = len(items) - index - 1
        tail = len(f"{separator}… and {left} more") if left else 0
        cost = len(item) + (len(separator) if kept else 0)
        if used + cost + tail > limit:
            if not kept:  # not even the first one fits: clip it
                more = f"{separator}… and {left} more" if left else ""
                return clip(item, limit - len(more)) + more
            return separator.join(kept) + f"{separator}… and {len(items) - index} more"
        kept.append(item)
        used += cost
    return separator.join(kept)


def code_block(code: StyleCode | str) -> str:
    """A code block: one tap copies it on mobile, and nothing in it is read as markdown."""
    return f"```\n{code}\n```"



def png_file(data: bytes, filename: str, *, spoiler: bool = False) -> discord.File:
    return discord.File(io.BytesIO(data), filename=filename, spoiler=spoiler)


def levels_chart_png(code: StyleCode, *, width: int = 400, height: int = 140) -> bytes:
    """A bar chart of the 20 levels (0..63), one bar per latent value, drawn with PIL."""
    image = Image.new("RGB", (width, height), (30, 31, 36))
    draw = ImageDraw.Draw(image)
    margin, baseline = 8, height - 8
    slot = (width - 2 * margin) / LATENT_DIM
    for index, level in enumerate(code.levels):
        left = margin + index * slot + 2
        top = baseline - (baseline - margin) * level / MAX_LEVEL
        draw.rectangle([left, top, left + slot - 4, baseline], fill=(123, 92, 255))
    draw.line([margin, baseline, width - margin, baseline], fill=(160, 160, 170))
    return png_bytes(image)


def encode_embed(code: StyleCode, *, source_filename: str, thumbnail: bool = True) -> discord.Embed:
    embed = discord.Embed(title="Stylecode", description=code_block(code), colour=BRAND)
    embed.add_field(name="Encoder version", value=str(code.version))
    embed.set_footer(text=f"from {source_filename} · the picture itself is not kept")
    if thumbnail:
        embed.set_thumbnail(url="attachment://source.png")
    return embed


def decode_embed(code: StyleCode) -> discord.Embed:
    levels = " ".join(f"{level:2d}" for level in code.levels)
    embed = discord.Embed(title="Decoded stylecode", description=code_block(code), colour=BRAND)
    embed.add_field(name="Encoder version", value=str(code.version), inline=True)
    spec = VERSIONS.get(code.version)
    if spec is not None:  # which model made it: two deployments' "version 2" can be different models
        model = spec.title if spec.short_fingerprint is None else f"{spec.title} · {spec.short_fingerprint}"
        embed.add_field(name="Model", value=clip(model, FIELD_VALUE_MAX), inline=True)
    embed.add_field(name=f"Levels (0-{MAX_LEVEL})", value=f"```\n{levels}\n```", inline=False)
    embed.set_image(url="attachment://levels.png")
    return embed


@dataclass(frozen=True)
class GenerationSummary:
    """What the final /imagine message shows, enough for anyone to reproduce the images."""

    prompt: str
    style_label: str | None  # "name@rev", a mix, or the code; None = no style
    code: StyleCode | None
    seeds: Sequence[int]
    strength: float
    steps: int
    guidance_scale: float
    model_version: int
    negative_prompt: str = ""


def result_embed(summary: GenerationSummary, *, warnings: Sequence[str] = (), withheld: int = 0) -> discord.Embed:
    # Within 6000 characters in all: a 2000-character prompt (escaped) and three full fields.
    embed = discord.Embed(description=clip(escape(summary.prompt), 2000), colour=BRAND)
    embed.set_author(name="/imagine")
    if summary.style_label is not None:
        label = summary.style_label
        if summary.code is not None and label != summary.code.canonical:
            label = f"{label}\n`{summary.code.canonical}`"
        embed.add_field(name="Style", value=clip(label, FIELD_VALUE_MAX), inline=False)
    else:
        embed.add_field(name="Style", value="none (plain Stable Diffusion)", inline=False)
    seeds = ", ".join(str(s) for s in summary.seeds)
    embed.add_field(name="Seed" if len(summary.seeds) == 1 else "Seeds", value=seeds)
    embed.add_field(name="Strength", value=f"{summary.strength:g}")
    embed.add_field(name="Steps", value=str(summary.steps))
    embed.add_field(name="Guidance", value=f"{summary.guidance_scale:g}")
    embed.add_field(name="Model version", value=str(summary.model_version))
    if summary.negative_prompt:
        embed.add_field(name="Negative prompt", value=clip(escape(summary.negative_prompt), 1000), inline=False)
    notes = list(warnings)
    if withheld:
        notes.append(
            f"{withheld} image(s) withheld: the safety checker flagged them. "
            "Server admins can allow them outside age-restricted channels with /settings."
        )
    if notes:
        embed.add_field(name="Notes", value=join_within([f"• {n}" for n in notes], 900), inline=False)
    return embed


def progress_text(step: int, total: int) -> str:
    filled = round(10 * step / max(total, 1))
    return f"Painting… step {step}/{total} `{'█' * filled}{'░' * (10 - filled)}`"


def queued_text(position: int) -> str:
    if position <= 1:
        return "Queued: you're next."
    return f"Queued: position {position}."
