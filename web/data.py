"""What the gallery shows, gathered through `registry/` functions as plain dicts: the pages render them
and the API returns them as JSON, so both always carry the same data.

Every read asks as nobody (`user_id=None, guild_id=None`): only public, live styles.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import urllib.parse

from sqlalchemy.ext.asyncio import AsyncSession

import registry
from registry.browse import SEARCH_CANDIDATES
from registry.models import Style
from stylecodes.codec import CodeError, parse_code

from .http import BadRequest, NotFound

PUBLIC = {"user_id": None, "guild_id": None}
HOME_ROW = 12
PAGE_SIZE = 24
SIMILAR_SHOWN = 8
HISTORY_DAYS = 30
_CURSOR_MAX = 200


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def style_url(name: str) -> str:
    return f"/styles/{quote(name)}"


def preview_url(name: str, number: int, *, thumb: bool = False) -> str:
    return f"/styles/{quote(name)}/preview/{number}{'/thumb' if thumb else ''}.webp"


def levels_of(code: str) -> list[int]:
    try:
        return list(parse_code(code).levels)
    except CodeError:
        return []


def card(style: Style, head: registry.HeadRevision | None) -> dict:
    """One style as a list entry."""
    return {
        "name": style.name,
        "url": style_url(style.name),
        "description": style.description,
        "tags": style.tag_list,
        "owner_id": str(style.owner_id),  # a string: JSON numbers lose precision past 2^53
        "version": style.version,
        "revision": style.head_number,
        "code": head.code if head else None,
        "levels": levels_of(head.code) if head else [],
        "thumbnail_url": preview_url(style.name, head.number, thumb=True) if head and head.has_preview else None,
        "use_count": style.use_count,
        "favourite_count": style.favourite_count,
        "created_at": style.created_at.isoformat(),
        "updated_at": style.updated_at.isoformat(),
    }


async def cards(session: AsyncSession, styles: list[Style]) -> list[dict]:
    heads = await registry.head_revisions(session, [style.id for style in styles])
    return [card(style, heads.get(style.id)) for style in styles]


async def home(session: AsyncSession) -> dict:
    rows = {}
    for sort in ("trending", "popular", "new"):
        page = await registry.browse(session, sort=sort, limit=HOME_ROW, **PUBLIC)
        rows[sort] = await cards(session, page.items)
    return rows


async def listing(
    session: AsyncSession,
    *,
    sort: str = "new",
    tag: str | None = None,
    author_id: int | None = None,
    query: str | None = None,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> dict:
    """A page of public styles: a search (`query`, ranked), else a browse order with filters."""
    if query is not None and query.strip():
        offset = 0 if cursor is None else decode_search_cursor(cursor)
        found = await registry.search(session, query, limit=limit, offset=offset, **PUBLIC)
        after = offset + limit
        more = len(found) == limit and after < SEARCH_CANDIDATES  # a full page: is there one more?
        if more:
            more = bool(await registry.search(session, query, limit=1, offset=after, **PUBLIC))
        return {"items": await cards(session, found), "next_cursor": encode_search_cursor(after) if more else None}
    page = await registry.browse(session, sort=sort, tag=tag, author_id=author_id, cursor=cursor, limit=limit, **PUBLIC)
    return {"items": await cards(session, page.items), "next_cursor": page.next_cursor}


def encode_search_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps(["search", offset]).encode()).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> int:
    damaged = BadRequest("That page cursor is damaged or belongs to another listing; start again from the first page.")
    if len(cursor) > _CURSOR_MAX:
        raise damaged
    try:
        kind, offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise damaged from None
    if kind != "search" or type(offset) is not int or not 0 <= offset < SEARCH_CANDIDATES:
        raise damaged
    return offset


async def public_revision(session: AsyncSession, name: str, number: int | None = None) -> registry.Revision:
    """The revision, if its style is public and live; `NotFound` (the same for missing and private) otherwise."""
    reference = name if number is None else f"{name}@{number}"
    try:
        return await registry.resolve_reference(session, reference, **PUBLIC)
    except registry.StyleNotFoundError as exc:
        raise NotFound(f"No public style is named `{_shown(name)}`.", exc.suggestions) from None
    except (registry.PermissionDeniedError, registry.InvalidNameError, registry.InvalidReferenceError):
        raise NotFound(f"No public style is named `{_shown(name)}`.") from None
    except registry.RevisionNotFoundError:
        raise NotFound(f"`{_shown(name)}` has no revision {number}.") from None


def _shown(name: str) -> str:
    return name if len(name) <= 40 else name[:39] + "…"


async def style_detail(session: AsyncSession, name: str) -> dict:
    """Everything the style page shows."""
    head = await public_revision(session, name)
    style = head.style
    revisions = await registry.list_revisions(session, style.name, **PUBLIC)
    with_preview = await registry.head_revisions(session, [style.id])
    parent, forks = await registry.style_family(session, style, **PUBLIC)
    history = await registry.style_history(session, style.name, recent=0, days=HISTORY_DAYS, **PUBLIC)
    similar = await registry.similar_styles(session, head.code, k=SIMILAR_SHOWN, exclude_style_id=style.id, **PUBLIC)
    owner = await registry.get_user(session, style.owner_id)
    previews = await registry.revisions_with_previews(session, style.id)
    detail = card(style, with_preview.get(style.id))
    detail.update(
        {
            "owner": {
                "id": str(style.owner_id),
                "name": owner.display_name if owner else "",
                "url": f"/users/{style.owner_id}",
            },
            "preview_url": preview_url(style.name, head.number) if head.number in previews else None,
            "revisions": [
                {
                    "number": revision.number,
                    "code": revision.code,
                    "version": revision.version,
                    "note": revision.note,
                    "created_at": revision.created_at.isoformat(),
                    "preview_url": preview_url(style.name, revision.number) if revision.number in previews else None,
                    "thumbnail_url": (
                        preview_url(style.name, revision.number, thumb=True) if revision.number in previews else None
                    ),
                }
                for revision in reversed(revisions)
            ],
            "parent": None if parent is None else {"name": parent.name, "url": style_url(parent.name)},
            "forks": await cards(session, forks),
            "uses_per_day": uses_per_day(history.uses_per_day, dt.datetime.now(dt.UTC).date()),
            "similar": [
                {**entry, "distance": round(found.distance, 4)}
                for found, entry in zip(similar, await cards(session, [s.style for s in similar]), strict=True)
            ],
        }
    )
    return detail


def uses_per_day(counts: list[tuple[dt.date, int]], today: dt.date) -> list[dict]:
    """The last `HISTORY_DAYS` days, oldest first, days without a use included (count 0)."""
    by_day = dict(counts)
    days = [today - dt.timedelta(days=offset) for offset in range(HISTORY_DAYS - 1, -1, -1)]
    return [{"date": day.isoformat(), "count": by_day.get(day, 0)} for day in days]


async def author(session: AsyncSession, user_id: int, cursor: str | None) -> dict:
    """A user's public styles, newest first; `NotFound` when they have none."""
    page = await listing(session, sort="new", author_id=user_id, cursor=cursor)
    if not page["items"] and cursor is None:
        raise NotFound("No public styles by this user.")
    user = await registry.get_user(session, user_id)
    return {"id": str(user_id), "name": user.display_name if user else "", **page}
