"""Who sees which style: one SQL condition, shared by resolve, browse, search, autocomplete and similar.

A style is visible to user U in guild G when it is not deleted and
- it is `public`, or U owns it, or it is a `guild` style made in G; and
- G's moderators have not hidden it in G. Moderation binds everyone in G, the owner included; the
  owner still manages the style (edit, revise, delete) through the owner-only paths, which do not
  go through visibility.

`resolve_reference` selects this same condition as a column and only explains a False in words
(`registry/styles.py`), so the rule exists once.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select

from .models import GuildHide, Style


def visible_to(user_id: int | None, guild_id: int | None) -> ColumnElement[bool]:
    same_guild = and_(Style.visibility == "guild", Style.guild_id == guild_id) if guild_id is not None else false()
    owned = Style.owner_id == user_id if user_id is not None else false()
    condition = and_(Style.deleted_at.is_(None), or_(Style.visibility == "public", owned, same_guild))
    if guild_id is None:
        return condition
    hidden = exists(select(GuildHide.style_id).where(GuildHide.guild_id == guild_id, GuildHide.style_id == Style.id))
    return and_(condition, not_(hidden))
