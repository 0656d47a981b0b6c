"""Style lifecycle: create, revise, fork, edit, delete/restore, resolve, favourites, moderation.

Every function takes the session first. Writes are atomic: they commit on success and roll back on
any error, so a failed call leaves nothing half-written. Nothing loads lazily (relationships raise).
"""

from __future__ import annotations

import difflib

from sqlalchemy import delete, func, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from stylecodes.codec import CodeError, StyleCode, parse_code

from ._sql import atomic, dialect_name, insert
from .errors import (
    InvalidCodeError,
    InvalidPreviewError,
    InvalidVisibilityError,
    NameTakenError,
    PermissionDeniedError,
    RegistryError,
    RevisionNotFoundError,
    StyleNotFoundError,
)
from .models import VISIBILITIES, Favourite, GuildHide, Revision, Style, StyleTag, User, utcnow
from .names import check_description, check_limit, check_note, normalise_name, normalise_tags, parse_reference
from .visibility import visible_to

MAX_PREVIEW_BYTES = 4 * 1024 * 1024  # a 4-image WebP grid is ~100-300 KB
SUGGESTIONS = 3
FIND_BY_CODE_MAX = 100
_SUGGESTION_NEIGHBOURS = 50  # names read on each side of the misspelt one (bounded work per miss)


# --- users ------------------------------------------------------------------------------------------


async def upsert_user(session: AsyncSession, user_id: int, *, display_name: str) -> User:
    """Create the user or refresh their cached display name."""
    async with atomic(session):
        await _ensure_user(session, user_id, display_name)
    return await session.get_one(User, user_id, populate_existing=True)


async def _ensure_user(session: AsyncSession, user_id: int, display_name: str | None = None) -> None:
    now = utcnow()
    statement = insert(session, User).values(
        id=user_id, display_name=(display_name or "")[:100], created_at=now, updated_at=now
    )
    if display_name is None:
        statement = statement.on_conflict_do_nothing(index_elements=[User.id])
    else:
        statement = statement.on_conflict_do_update(
            index_elements=[User.id], set_={"display_name": display_name[:100], "updated_at": now}
        )
    await session.execute(statement)


# --- validation ---------------------------------------------------------------------------------------


def to_code(code: str | StyleCode) -> StyleCode:
    """Parse a code with the engine's codec; errors become `InvalidCodeError` with the codec's message."""
    if isinstance(code, StyleCode):
        return code
    try:
        return parse_code(code)
    except CodeError as exc:
        raise InvalidCodeError(str(exc)) from None


def _check_visibility(visibility: str, guild_id: int | None) -> str:
    if visibility not in VISIBILITIES:
        raise InvalidVisibilityError(f"Visibility must be one of {', '.join(VISIBILITIES)}, got `{visibility}`.")
    if visibility == "guild" and guild_id is None:
        raise InvalidVisibilityError(
            "A `guild` style belongs to the server it was made in; save it from a server, or choose public or private."
        )
    return visibility


# --- creating -------------------------------------------------------------------------------------------


async def create_style(
    session: AsyncSession,
    *,
    name: str,
    code: str | StyleCode,
    owner_id: int,
    guild_id: int | None,
    visibility: str = "public",
    description: str = "",
    tags: list[str] | str | None = (),
    note: str = "",
    owner_name: str | None = None,
) -> Revision:
    """Save `code` under a new `name` as revision 1 (`tags=None`: no tags). Returns the revision, style loaded."""
    return await _create(
        session,
        name=name,
        code=code,
        owner_id=owner_id,
        guild_id=guild_id,
        visibility=visibility,
        description=description,
        tags=() if tags is None else tags,
        note=note,
        owner_name=owner_name,
        parent_id=None,
    )


async def fork_style(
    session: AsyncSession,
    source: str,
    *,
    new_name: str,
    user_id: int,
    guild_id: int | None,
    visibility: str | None = None,
    description: str | None = None,
    tags: list[str] | str | None = None,
    owner_name: str | None = None,
) -> Revision:
    """Copy the revision `source` refers to (``name``, ``name@3``) into a new style owned by `user_id`.

    Arguments left as None are copied from the source. The default visibility never widens the
    source's audience: a public fork of a public style, a private fork of a private one, a guild fork
    of a guild style forked in its own server, and a private fork of a guild style forked anywhere else
    (DMs, another server). A wider visibility must be asked for explicitly.
    """
    origin = await resolve_reference(session, source, user_id=user_id, guild_id=guild_id)
    if visibility is None:
        visibility = origin.style.visibility
        if visibility == "guild" and guild_id != origin.style.guild_id:
            visibility = "private"
    return await _create(
        session,
        name=new_name,
        code=origin.code,
        owner_id=user_id,
        guild_id=guild_id,
        visibility=visibility,
        description=origin.style.description if description is None else description,
        tags=origin.style.tags if tags is None else tags,
        note=f"forked from {origin.reference}",
        owner_name=owner_name,
        parent_id=origin.style_id,
    )


async def _create(
    session: AsyncSession, *, name, code, owner_id, guild_id, visibility, description, tags, note, owner_name, parent_id
) -> Revision:
    # Validate everything before touching the database.
    name = normalise_name(name)
    style_code = to_code(code)
    visibility = _check_visibility(visibility, guild_id)
    description = check_description(description)
    tag_text = normalise_tags(tags)
    note = check_note(note)
    now = utcnow()
    try:
        async with atomic(session):
            await _ensure_user(session, owner_id, owner_name)
            style = Style(
                name=name,
                owner_id=owner_id,
                guild_id=guild_id,
                visibility=visibility,
                description=description,
                tags=tag_text,
                parent_id=parent_id,
                head_number=1,
                version=style_code.version,
                created_at=now,
                updated_at=now,
            )
            session.add(style)
            await session.flush()
            revision = _new_revision(style, 1, style_code, owner_id, note, now)
            session.add(revision)
            session.add_all(StyleTag(style_id=style.id, tag=tag) for tag in tag_text.split())
            await session.flush()
    except IntegrityError:
        # The unique index on the name decides races: the loser lands here with nothing written.
        if await _name_exists(session, name):
            raise NameTakenError(
                f"The name `{name}` is already taken (names are first come, first served); pick another one."
            ) from None
        raise
    return await _load_revision(session, revision.id)


def _new_revision(style: Style, number: int, code: StyleCode, author_id: int, note: str, now) -> Revision:
    return Revision(
        style_id=style.id,
        number=number,
        code=code.canonical,
        version=code.version,
        levels=bytes(code.levels),
        author_id=author_id,
        note=note,
        created_at=now,
    )


async def _name_exists(session: AsyncSession, name: str) -> bool:
    return (await session.scalar(select(Style.id).where(Style.name == name))) is not None


async def _load_revision(session: AsyncSession, revision_id: int) -> Revision:
    statement = (
        select(Revision)
        .where(Revision.id == revision_id)
        .options(selectinload(Revision.style))
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one()


async def get_revision(session: AsyncSession, revision_id: int) -> Revision | None:
    """A revision (style loaded) by id, or None. No visibility check: for replaying a job, whose revision
    was resolved, with visibility respected, when the job was made."""
    statement = select(Revision).where(Revision.id == revision_id).options(selectinload(Revision.style))
    return await session.scalar(statement)


async def add_revision(
    session: AsyncSession, name: str, *, code: str | StyleCode, user_id: int, note: str = ""
) -> Revision:
    """Append revision n+1 to the owner's style. Earlier revisions never change."""
    style_code = to_code(code)
    note = check_note(note)
    async with atomic(session):
        style = await _owned_style(session, name, user_id=user_id, action="add a revision to")
        now = utcnow()
        # Taking the next number with one UPDATE ... RETURNING serialises concurrent revisions.
        number = await session.scalar(
            update(Style)
            .where(Style.id == style.id)
            .values(head_number=Style.head_number + 1, version=style_code.version, updated_at=now)
            .returning(Style.head_number)
        )
        revision = _new_revision(style, number, style_code, user_id, note, now)
        session.add(revision)
        await session.flush()
    return await _load_revision(session, revision.id)


# --- editing ------------------------------------------------------------------------------------------------


async def edit_style(
    session: AsyncSession,
    name: str,
    *,
    user_id: int,
    description: str | None = None,
    tags: list[str] | str | None = None,
    visibility: str | None = None,
) -> Style:
    """Change the description, tags and/or visibility (owner only). Arguments left as None stay."""
    description = None if description is None else check_description(description)
    tag_text = None if tags is None else normalise_tags(tags)
    async with atomic(session):
        style = await _owned_style(session, name, user_id=user_id, action="edit")
        if visibility is not None:
            style.visibility = _check_visibility(visibility, style.guild_id)
        if description is not None:
            style.description = description
        if tag_text is not None:
            style.tags = tag_text
            await session.execute(delete(StyleTag).where(StyleTag.style_id == style.id))
            session.add_all(StyleTag(style_id=style.id, tag=tag) for tag in tag_text.split())
        style.updated_at = utcnow()
    return style


async def delete_style(session: AsyncSession, name: str, *, user_id: int, moderator: bool = False) -> Style:
    """Soft-delete (owner, or `moderator=True` when the caller checked moderator rights). The name stays taken."""
    async with atomic(session):
        style = await _owned_style(session, name, user_id=user_id, action="delete", moderator=moderator)
        if style.deleted_at is None:
            style.deleted_at = utcnow()
    return style


async def restore_style(session: AsyncSession, name: str, *, user_id: int, moderator: bool = False) -> Style:
    """Undo a soft delete (owner, or a moderator)."""
    async with atomic(session):
        style = await _owned_style(session, name, user_id=user_id, action="restore", moderator=moderator)
        style.deleted_at = None
    return style


async def _owned_style(
    session: AsyncSession, name: str, *, user_id: int, action: str, moderator: bool = False
) -> Style:
    name = normalise_name(name)
    style = await session.scalar(select(Style).where(Style.name == name).execution_options(populate_existing=True))
    if style is None:
        raise StyleNotFoundError(
            f"There is no style named `{name}`.",
            suggestions=await suggest_names(session, name, user_id=user_id, guild_id=None),
        )
    if style.owner_id != user_id and not moderator:
        if style.visibility == "private":
            raise PermissionDeniedError(f"`{name}` is a private style; only its owner can see or change it.")
        raise PermissionDeniedError(f"Only the owner of `{name}` can {action} it. Fork it to make your own version.")
    if style.deleted_at is not None and action not in ("restore", "delete"):
        raise StyleNotFoundError(f"`{name}` was deleted; restore it first.")
    return style


# --- resolving ---------------------------------------------------------------------------------------------


async def resolve_reference(session: AsyncSession, ref: str, *, user_id: int | None, guild_id: int | None) -> Revision:
    """``name`` / ``name@latest`` / ``name@3`` -> that revision (with `style` loaded), if the asker may see it."""
    name, number = parse_reference(ref)
    # Whether the asker may see the style is `visible_to`, evaluated in the same query; Python only
    # puts a refusal into words (`_refusal`).
    visible = visible_to(user_id, guild_id).label("visible")
    statement = (
        select(Revision, visible)
        .join(Revision.style)
        .where(Style.name == name, Revision.number == (Style.head_number if number is None else number))
        .options(contains_eager(Revision.style))
    )
    row = (await session.execute(statement)).one_or_none()
    if row is not None:
        revision, can_see = row
        style = revision.style
    else:
        revision = None
        style_row = (await session.execute(select(Style, visible).where(Style.name == name))).one_or_none()
        if style_row is None:
            raise StyleNotFoundError(
                f"There is no style named `{name}`.",
                suggestions=await suggest_names(session, name, user_id=user_id, guild_id=guild_id),
            )
        style, can_see = style_row
    if not can_see:
        raise _refusal(style, user_id=user_id, guild_id=guild_id)
    if revision is None:
        raise RevisionNotFoundError(
            f"`{name}` has revisions 1 to {style.head_number}; there is no revision {number}. "
            f"Use `{name}@latest` for the newest."
        )
    return revision


def _refusal(style: Style, *, user_id: int | None, guild_id: int | None) -> RegistryError:
    """Why `visible_to` said no, for a style it refused: the first condition of the rule that fails."""
    owner = user_id is not None and style.owner_id == user_id
    if style.deleted_at is not None:
        hint = " Restore it to use it again." if owner else ""
        return StyleNotFoundError(f"The style `{style.name}` was deleted.{hint}")
    if not owner and style.visibility == "private":
        return PermissionDeniedError(f"`{style.name}` is a private style; only its owner can use it.")
    if not owner and style.visibility == "guild" and style.guild_id != guild_id:
        return PermissionDeniedError(f"`{style.name}` can only be used in the server where it was made.")
    # Visible by its visibility, so the guild's moderators hid it here.
    hint = " You still own it: you can edit, revise or delete it, and use it elsewhere." if owner else ""
    return PermissionDeniedError(f"This server's moderators have hidden `{style.name}` here.{hint}")


async def get_style(session: AsyncSession, name: str, *, user_id: int | None, guild_id: int | None) -> Style:
    """The style named `name`, if visible to the asker (for info cards)."""
    return (await resolve_reference(session, name, user_id=user_id, guild_id=guild_id)).style


async def suggest_names(
    session: AsyncSession, name: str, *, user_id: int | None, guild_id: int | None, limit: int = SUGGESTIONS
) -> list[str]:
    """Closest visible names to a misspelt one, closest first.

    PostgreSQL: trigram similarity (pg_trgm) through the GIN index `ix_styles_name_trgm`, visibility in
    the same query. SQLite: difflib over a bounded set of alphabetic neighbours: the names sorted next
    to `name` and next to `name` without its first letter, so typos after the first letter and an
    extra/missing first letter are found; the work is bounded (a few hundred rows from the name index).
    """
    visible = visible_to(user_id, guild_id)
    if dialect_name(session) == "postgresql":
        likeness = func.similarity(Style.name, name)
        statement = (
            select(Style.name)
            .where(Style.name.op("%")(name), visible)  # `%`: similarity at least pg_trgm's threshold (0.5, db.py)
            .order_by(likeness.desc(), Style.name)
            .limit(limit)
        )
        return list(await session.scalars(statement))
    neighbours = []
    for anchor in {name, name[1:]}:
        after = select(Style.name).where(Style.name >= anchor, visible).order_by(Style.name)
        before = select(Style.name).where(Style.name < anchor, visible).order_by(Style.name.desc())
        neighbours += [statement.limit(_SUGGESTION_NEIGHBOURS).subquery() for statement in (after, before)]
    candidates = set(await session.scalars(union_all(*(select(sub.c.name) for sub in neighbours))))
    return difflib.get_close_matches(name, sorted(candidates), n=limit, cutoff=0.6)


async def find_by_code(
    session: AsyncSession, code: str | StyleCode, *, user_id: int | None, guild_id: int | None, limit: int = 25
) -> list[Revision]:
    """Visible named revisions that carry exactly this code (any spelling of it), oldest first."""
    check_limit(limit, FIND_BY_CODE_MAX)
    canonical = to_code(code).canonical
    statement = (
        select(Revision)
        .join(Revision.style)
        .where(Revision.code == canonical, visible_to(user_id, guild_id))
        .options(contains_eager(Revision.style))
        .order_by(Revision.id)
        .limit(limit)
    )
    return list(await session.scalars(statement))


async def list_revisions(
    session: AsyncSession, name: str, *, user_id: int | None, guild_id: int | None
) -> list[Revision]:
    """All revisions of a visible style, oldest first (style loaded)."""
    style = await get_style(session, name, user_id=user_id, guild_id=guild_id)
    statement = select(Revision).where(Revision.style_id == style.id).order_by(Revision.number)
    revisions = list(await session.scalars(statement))
    for revision in revisions:
        set_committed_value(revision, "style", style)  # already loaded: attach without a query or a change
    return revisions


# --- favourites, moderation, previews -------------------------------------------------------------------


async def toggle_favourite(session: AsyncSession, name: str, *, user_id: int, guild_id: int | None) -> bool:
    """Favourite the style, or un-favourite it if it already was. Returns whether it is now a favourite.

    Safe under concurrency: the insert is ``ON CONFLICT DO NOTHING`` (it waits for a racing insert of
    the same row to commit), and the counter moves by exactly the rows this call inserted or deleted.
    """
    async with atomic(session):
        style = await get_style(session, name, user_id=user_id, guild_id=guild_id)
        inserted = await session.scalar(
            insert(session, Favourite)
            .values(user_id=user_id, style_id=style.id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[Favourite.user_id, Favourite.style_id])
            .returning(Favourite.style_id)
        )
        if inserted is not None:
            delta = 1
        else:
            removed = await session.execute(
                delete(Favourite).where(Favourite.user_id == user_id, Favourite.style_id == style.id)
            )
            delta = -removed.rowcount  # 0 when a racing toggle removed it first
        if delta:
            await session.execute(
                update(Style).where(Style.id == style.id).values(favourite_count=Style.favourite_count + delta)
            )
    return inserted is not None


async def hide_in_guild(
    session: AsyncSession, name: str, *, guild_id: int, moderator_id: int, hidden: bool = True
) -> None:
    """Hide (or unhide) a style within one guild. The caller checks that `moderator_id` moderates it."""
    name = normalise_name(name)
    async with atomic(session):
        style_id = await session.scalar(select(Style.id).where(Style.name == name))
        if style_id is None:
            raise StyleNotFoundError(f"There is no style named `{name}`.")
        if hidden:
            await session.execute(
                insert(session, GuildHide)
                .values(guild_id=guild_id, style_id=style_id, hidden_by=moderator_id, created_at=utcnow())
                .on_conflict_do_nothing(index_elements=[GuildHide.guild_id, GuildHide.style_id])
            )
        else:
            await session.execute(
                delete(GuildHide).where(GuildHide.guild_id == guild_id, GuildHide.style_id == style_id)
            )


async def set_revision_preview(session: AsyncSession, revision_id: int, webp: bytes) -> None:
    """Store the worker's WebP preview grid for a revision (the only part of a revision written later)."""
    if not isinstance(webp, bytes | bytearray) or webp[:4] != b"RIFF" or webp[8:12] != b"WEBP":
        raise InvalidPreviewError("A revision preview must be a WebP image (RIFF....WEBP).")
    if len(webp) > MAX_PREVIEW_BYTES:
        raise InvalidPreviewError(f"The preview is {len(webp)} bytes; the limit is {MAX_PREVIEW_BYTES}.")
    async with atomic(session):
        result = await session.execute(
            update(Revision).where(Revision.id == revision_id).values(preview_webp=bytes(webp))
        )
        if result.rowcount == 0:
            raise RevisionNotFoundError(f"There is no revision with id {revision_id}.")


async def get_revision_preview(session: AsyncSession, revision_id: int) -> bytes | None:
    return await session.scalar(select(Revision.preview_webp).where(Revision.id == revision_id))
