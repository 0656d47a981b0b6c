"""Reads the public web gallery needs beyond browse and resolve: a style's family (its parent and forks),
a user's card, and the head revision of many styles at once (code and whether a preview exists).

Visibility goes through the one rule (`visible_to`) like every other listing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Revision, Style, User
from .names import check_limit
from .visibility import visible_to

FORKS_MAX = 100


@dataclass
class HeadRevision:
    revision_id: int
    number: int
    code: str
    has_preview: bool


async def head_revisions(session: AsyncSession, style_ids: list[int]) -> dict[int, HeadRevision]:
    """Style id -> its head revision (id, number, code, whether it has a preview), in one query.

    No visibility check: callers pass styles they already listed or resolved for the asker.
    """
    if not style_ids:
        return {}
    statement = (
        select(
            Revision.style_id,
            Revision.id,
            Revision.number,
            Revision.code,
            Revision.preview_webp.is_not(None).label("has_preview"),
        )
        .join(Style, and_(Style.id == Revision.style_id, Style.head_number == Revision.number))
        .where(Revision.style_id.in_(set(style_ids)))
    )
    rows = await session.execute(statement)
    return {row.style_id: HeadRevision(row.id, row.number, row.code, bool(row.has_preview)) for row in rows}


async def style_family(
    session: AsyncSession, style: Style, *, user_id: int | None, guild_id: int | None, limit: int = 24
) -> tuple[Style | None, list[Style]]:
    """The style `style` was forked from and its forks (newest first), each only if visible to the asker."""
    check_limit(limit, FORKS_MAX)
    visible = visible_to(user_id, guild_id)
    parent = None
    if style.parent_id is not None:
        parent = await session.scalar(select(Style).where(Style.id == style.parent_id, visible))
    forks = await session.scalars(
        select(Style).where(Style.parent_id == style.id, visible).order_by(Style.id.desc()).limit(limit)
    )
    return parent, list(forks)


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    """The user's row (display name), or None when the registry never saw them."""
    return await session.get(User, user_id)


async def revisions_with_previews(session: AsyncSession, style_id: int) -> set[int]:
    """Numbers of the style's revisions that have a preview image (without reading the images)."""
    statement = select(Revision.number).where(Revision.style_id == style_id, Revision.preview_webp.is_not(None))
    return set(await session.scalars(statement))
