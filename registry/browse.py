"""Browse (keyset-paginated sorts), full-text search and name autocomplete.

Every sort reads one index in order (`ix_styles_popular`, `ix_styles_trending`, ...), each ending in
the id as tie-breaker, and pages with a keyset cursor ``(key, id) < (last_key, last_id)``: page 1000
costs what page 1 costs, and rows added meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass

from sqlalchemy import column, exists, func, literal_column, select, table, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import dialect_name
from .errors import InvalidCursorError, InvalidFilterError, InvalidSortError, InvalidTextError
from .models import Style, StyleTag, utcnow
from .names import INT32_MAX, check_limit, normalise_tags
from .trending import WINDOW, window_floor
from .visibility import visible_to

SORTS = ("new", "popular", "trending", "favourites")
PAGE_MAX = 100
AUTOCOMPLETE_MAX = 25  # Discord shows at most 25 choices
_SORT_KEYS = {"popular": Style.use_count, "trending": Style.trending_score, "favourites": Style.favourite_count}
_NAME_PREFIX = re.compile(r"^[a-z0-9-]*$")
_WORD = re.compile(r"[^\W_]+")
_SEARCH_WORDS_MAX = 8
SEARCH_CANDIDATES = 200
_CURSOR_MAX = 200  # characters; a real cursor is under 60
VERSION_RANGE = (0, 9)  # the encoder version digit of a stylecode


@dataclass
class Page:
    items: list[Style]
    next_cursor: str | None  # pass back as `cursor` for the next page; None = last page


async def browse(
    session: AsyncSession,
    *,
    user_id: int | None,
    guild_id: int | None,
    sort: str = "new",
    tag: str | None = None,
    author_id: int | None = None,
    version: int | None = None,
    cursor: str | None = None,
    limit: int = 25,
) -> Page:
    """Visible styles in `sort` order (new, popular, trending, favourites), optionally filtered."""
    if not isinstance(sort, str) or sort not in SORTS:
        raise InvalidSortError(f"`{sort}` is not a sort; use one of {', '.join(SORTS)}.")
    check_limit(limit, PAGE_MAX)
    _check_filters(author_id, version)
    key = _SORT_KEYS.get(sort)
    statement = select(Style).where(visible_to(user_id, guild_id))
    if tag is not None:
        tag = normalise_tags([tag])
        statement = statement.where(exists().where(StyleTag.style_id == Style.id, StyleTag.tag == tag))
    if author_id is not None:
        statement = statement.where(Style.owner_id == author_id)
    if version is not None:
        statement = statement.where(Style.version == version)
    if sort == "trending":
        now = utcnow()
        # The score bound lets the index scan stop; last_used_at enforces the 7-day window exactly.
        statement = statement.where(Style.trending_score >= window_floor(now), Style.last_used_at >= now - WINDOW)
    if cursor is not None:
        last_key, last_id = _decode_cursor(cursor, sort)
        if key is None:
            statement = statement.where(Style.id < last_id)
        else:
            # The plain `key <= last_key` is implied by the row comparison; it is there for PostgreSQL's
            # row estimate, which otherwise prefers a bitmap scan + sort over the ordered index scan.
            statement = statement.where(key <= last_key, tuple_(key, Style.id) < tuple_(last_key, last_id))
    order = [Style.id.desc()] if key is None else [key.desc(), Style.id.desc()]
    rows = list(await session.scalars(statement.order_by(*order).limit(limit + 1)))
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = _encode_cursor(sort, None if key is None else getattr(last, key.key), last.id)
    return Page(items=items, next_cursor=next_cursor)


def _check_filters(author_id: int | None, version: int | None) -> None:
    if author_id is not None and (isinstance(author_id, bool) or not isinstance(author_id, int)):
        raise InvalidFilterError(f"The author filter is a Discord user id (a whole number), got {author_id!r}.")
    low, high = VERSION_RANGE
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or not low <= version <= high
    ):
        raise InvalidFilterError(
            f"The version filter is an encoder version digit from {low} to {high}, got {version!r}."
        )


def _encode_cursor(sort: str, key: float | int | None, style_id: int) -> str:
    raw = json.dumps([sort, key, style_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[float | int | None, int]:
    """The (key, id) a cursor made by `_encode_cursor` for `sort` holds; anything else is refused."""
    damaged = InvalidCursorError("That page cursor is damaged; start again from the first page.")
    if not isinstance(cursor, str) or len(cursor) > _CURSOR_MAX:
        raise damaged
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise damaged from None
    if not (isinstance(decoded, list) and len(decoded) == 3 and decoded[0] in SORTS):
        raise damaged
    cursor_sort, key, style_id = decoded
    if cursor_sort != sort:
        raise InvalidCursorError(f"That cursor belongs to another listing, not the `{sort}` sort; start again.")
    if not _is_int(style_id) or not 1 <= style_id <= INT32_MAX:
        raise damaged
    if sort == "new":
        valid = key is None
    elif sort == "trending":  # a finite score (JSON also spells NaN and Infinity)
        valid = (_is_int(key) and abs(key) <= 2**53) or (isinstance(key, float) and math.isfinite(key))
    else:  # use or favourite counts
        valid = _is_int(key) and 0 <= key <= INT32_MAX
    if not valid:
        raise damaged
    return key, style_id


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- search ---------------------------------------------------------------------------------------------

_FTS = table("style_fts", column("rowid"), column("rank"))  # SQLite FTS5, created by the migration


async def search(
    session: AsyncSession,
    query: str,
    *,
    user_id: int | None,
    guild_id: int | None,
    limit: int = 25,
    offset: int = 0,
) -> list[Style]:
    """Visible styles whose name, description or tags contain every word of `query` (the last word also
    as a prefix), best match first (SQLite FTS5 bm25 / PostgreSQL ts_rank) among the newest
    `SEARCH_CANDIDATES` visible matches; `offset` skips that many of them (pages)."""
    if not isinstance(query, str):
        raise InvalidTextError(f"A search query must be text, got {type(query).__name__}.")
    check_limit(limit, PAGE_MAX)
    check_limit(offset, SEARCH_CANDIDATES - 1, what="offset", minimum=0)
    found = await _search_words(session, query, user_id=user_id, guild_id=guild_id, limit=offset + limit)
    return found[offset:]


async def _search_words(
    session: AsyncSession, query: str, *, user_id: int | None, guild_id: int | None, limit: int
) -> list[Style]:
    words = [word.lower() for word in _WORD.findall(query)][:_SEARCH_WORDS_MAX]
    if not words:
        return []
    # Whole words first: a prefix term (``word*``) merges the posting lists of every word it expands
    # to (~20 ms for a common word at 1M styles), an exact one reads a single list (~1 ms). The last
    # word is then also tried as a prefix (the user may still be typing it) to fill a short result.
    found = await _search(session, words, prefix=False, user_id=user_id, guild_id=guild_id, limit=limit)
    if len(found) < limit:
        more = await _search(session, words, prefix=True, user_id=user_id, guild_id=guild_id, limit=limit)
        seen = {style.id for style in found}
        found += [style for style in more if style.id not in seen][: limit - len(found)]
    return found


async def _search(
    session: AsyncSession, words: list[str], *, prefix: bool, user_id: int | None, guild_id: int | None, limit: int
) -> list[Style]:
    # Visibility (soft delete and guild hides included) is part of the candidate query, before its
    # LIMIT: invisible matches never take a candidate's place.
    visible = visible_to(user_id, guild_id)
    if dialect_name(session) == "sqlite":
        terms = [f'"{word}"' for word in words]
        if prefix:
            terms[-1] += "*"
        candidates = (
            select(_FTS.c.rowid.label("id"), _FTS.c.rank.label("rank"))
            .join(Style, Style.id == _FTS.c.rowid)
            .where(literal_column("style_fts").op("MATCH")(" ".join(terms)), visible)
            .order_by(_FTS.c.rowid.desc())
        )
        higher_is_better = False  # bm25
    else:
        terms = list(words)
        if prefix:
            terms[-1] += ":*"
        tsquery = func.to_tsquery(literal_column("'simple'::regconfig"), " & ".join(terms))
        document = literal_column("styles.search_tsv")  # stored generated column with a GIN index (migration)
        candidates = (
            select(Style.id.label("id"), func.ts_rank(document, tsquery).label("rank"))
            .where(document.op("@@")(tsquery), visible)
            .order_by(Style.id.desc())
        )
        higher_is_better = True  # ts_rank
    # Rank only the newest SEARCH_CANDIDATES visible matches: ranking all of them costs ~200 ms for a
    # word in 20 % of 1M styles, while a query that narrows to fewer matches is ranked exactly.
    matches = candidates.limit(SEARCH_CANDIDATES).subquery("matches")
    statement = (
        select(Style)
        .join(matches, matches.c.id == Style.id)
        .order_by(matches.c.rank.desc() if higher_is_better else matches.c.rank, Style.id)
    )
    return list(await session.scalars(statement.limit(limit)))


# --- autocomplete --------------------------------------------------------------------------------------


async def autocomplete_names(
    session: AsyncSession, prefix: str, *, user_id: int | None, guild_id: int | None, limit: int = AUTOCOMPLETE_MAX
) -> list[str]:
    """Visible names starting with `prefix`, alphabetically. Typing never raises: junk gives []."""
    check_limit(limit, AUTOCOMPLETE_MAX)
    prefix = "" if prefix is None else prefix
    if not isinstance(prefix, str):
        return []
    prefix = prefix.strip().lower().partition("@")[0]
    if not _NAME_PREFIX.match(prefix):
        return []
    statement = select(Style.name).where(visible_to(user_id, guild_id))
    if prefix:
        # A range on the name index (byte order on both backends); LIKE would not use it everywhere.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        statement = statement.where(Style.name >= prefix, Style.name < upper)
    return list(await session.scalars(statement.order_by(Style.name).limit(limit)))
