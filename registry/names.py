"""Validation of style names, references (``name@3``), tags and descriptions. Pure functions, no IO."""

from __future__ import annotations

import re
from collections.abc import Iterable

from stylecodes.codec import CANONICAL_LENGTH, LEGACY_LENGTH, CodeError, parse_code

from .errors import InvalidNameError, InvalidReferenceError, InvalidTextError, LimitExceededError
from .models import DESCRIPTION_MAX, NAME_MAX, NOTE_MAX, TAG_MAX, TAGS_MAX

NAME_MIN = 3
TAG_MIN = 2
INT32_MAX = 2**31 - 1  # ids, revision numbers and counters are 32-bit integers on PostgreSQL
_DECIMAL = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also accepts '²' and other scripts' digits
_NAME_RE = re.compile(rf"^[a-z0-9][a-z0-9-]{{{NAME_MIN - 2},{NAME_MAX - 2}}}[a-z0-9]$")
_TAG_RE = re.compile(rf"^[a-z0-9][a-z0-9-]{{0,{TAG_MAX - 2}}}[a-z0-9]$")
_NAME_RULE = (
    f"Names are {NAME_MIN}-{NAME_MAX} characters of a-z, 0-9 and `-`, starting and ending with a letter or digit, "
    "e.g. `neon-noir`."
)

# Words the bot uses as keywords (`name@latest`, `/style random`), or that would mislead users.
RESERVED_NAMES = frozenset(
    {
        "latest", "random", "new", "help", "admin", "admins", "mod", "mods", "moderator", "moderators",
        "settings", "search", "browse", "popular", "trending", "favourites", "favorites", "top", "me", "mine",
        "all", "none", "null", "undefined", "code", "codes", "style", "styles", "everyone", "here", "official",
        "stylecodes", "system", "discord", "bot", "api", "root", "owner", "staff", "support", "delete", "restore",
        "fork", "edit", "history", "similar", "imagine", "encode", "mix", "default",
    }
)  # fmt: skip


def normalise_name(text: str) -> str:
    """Lower-case and validate a style name; raises `InvalidNameError` saying how to fix it."""
    if not isinstance(text, str):
        raise InvalidNameError(f"A style name must be text. {_NAME_RULE}")
    name = text.strip().lower()
    if not name:
        raise InvalidNameError(f"The style name is empty. {_NAME_RULE}")
    if len(name) < NAME_MIN or len(name) > NAME_MAX:
        raise InvalidNameError(f"`{_clip(name)}` has {len(name)} characters. {_NAME_RULE}")
    if not _NAME_RE.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
        problem = f"contains {', '.join(repr(c) for c in bad)}" if bad else "starts or ends with `-`"
        raise InvalidNameError(f"`{_clip(name)}` {problem}. {_NAME_RULE}")
    if name in RESERVED_NAMES:
        raise InvalidNameError(f"`{name}` is reserved for the bot's own use; pick another name.")
    if name.isdigit():
        raise InvalidNameError(f"`{name}` is only digits, which reads like a revision number; add a letter.")
    if len(name) in (CANONICAL_LENGTH, LEGACY_LENGTH) and _parses_as_code(name):
        raise InvalidNameError(f"`{name}` is itself a valid stylecode, so it could not be told apart from one.")
    return name


def _parses_as_code(text: str) -> bool:
    try:
        parse_code(text)
    except CodeError:
        return False
    return True


def parse_reference(ref: str) -> tuple[str, int | None]:
    """``name`` / ``name@latest`` -> (name, None); ``name@3`` -> (name, 3)."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidReferenceError("The style reference is empty; write `name`, `name@3` or `name@latest`.")
    name_part, sep, revision_part = ref.strip().partition("@")
    name = normalise_name(name_part)
    if not sep or revision_part.strip().lower() == "latest":
        return name, None
    revision_text = revision_part.strip()
    digits = revision_text.lstrip("0")
    if not _DECIMAL.fullmatch(revision_text) or not digits:
        raise InvalidReferenceError(
            f"`@{_clip(revision_text)}` is not a revision: write `{name}@3` for revision 3 or `{name}@latest`."
        )
    # The length is checked first: int() of thousands of digits is slow (and refused past 4300 digits).
    if len(digits) > len(str(INT32_MAX)) or int(digits) > INT32_MAX:
        raise InvalidReferenceError(
            f"`@{_clip(revision_text)}` is far beyond any revision (they are numbered 1, 2, 3, ...); "
            f"use `{name}@latest` for the newest."
        )
    return name, int(digits)


def check_limit(value: int, maximum: int, *, what: str = "limit", minimum: int = 1) -> int:
    """A page size or count: a whole number in ``minimum..maximum``, else `LimitExceededError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise LimitExceededError(f"`{what}` must be a whole number from {minimum} to {maximum}, got {value!r}.")
    return value


def normalise_tags(tags: Iterable[str] | str) -> str:
    """Validate tags (a list, or text separated by spaces/commas) -> the stored space-separated form."""
    if isinstance(tags, str):
        items = re.split(r"[\s,]+", tags)
    elif isinstance(tags, Iterable) and not isinstance(tags, bytes | bytearray):
        items = list(tags)
    else:
        raise InvalidNameError(f"Tags are a list of words or one text of words, got {type(tags).__name__}.")
    cleaned: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise InvalidNameError(f"A tag must be text, got {type(raw).__name__} `{_clip(repr(raw))}`.")
        tag = raw.strip().lower().lstrip("#")
        if not tag or tag in cleaned:
            continue
        if not _TAG_RE.match(tag):
            raise InvalidNameError(
                f"The tag `{_clip(tag)}` is not valid: tags are {TAG_MIN}-{TAG_MAX} characters of a-z, 0-9 and `-`."
            )
        cleaned.append(tag)
    if len(cleaned) > TAGS_MAX:
        raise LimitExceededError(f"A style has at most {TAGS_MAX} tags, got {len(cleaned)}; drop some.")
    return " ".join(cleaned)


def check_description(description: str | None) -> str:
    description = _text(description, "The description").strip()
    if len(description) > DESCRIPTION_MAX:
        raise LimitExceededError(
            f"The description has {len(description)} characters; the limit is {DESCRIPTION_MAX}. Shorten it."
        )
    return description


def check_note(note: str | None) -> str:
    note = _text(note, "The revision note").strip()
    if len(note) > NOTE_MAX:
        raise LimitExceededError(f"The revision note has {len(note)} characters; the limit is {NOTE_MAX}.")
    return note


def _text(value: str | None, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be text, got {type(value).__name__}.")
    return value


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
