"""The registry schema: typed SQLAlchemy 2 models.

Only tests call ``create_all``; the application builds the schema with Alembic (``alembic/``), whose
initial migration also creates what these models cannot express portably: the SQLite FTS5 table and
its triggers, and PostgreSQL's generated `search_tsv` column with its GIN index (see
`DIALECT_SPECIFIC_OBJECTS`).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import UserDefinedType

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Visibility = Literal["public", "guild", "private"]
VISIBILITIES: tuple[str, ...] = ("public", "guild", "private")
USAGE_STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
UNFINISHED_STATUSES: tuple[str, ...] = ("queued", "running")

NAME_MAX = 32
DESCRIPTION_MAX = 300
TAG_MAX = 24
TAGS_MAX = 8
NOTE_MAX = 200

# Created by migrations with dialect-specific SQL; the drift check ignores them. 0001: full-text search
# (SQLite FTS5, PostgreSQL tsvector + GIN). 0004, PostgreSQL only: `styles.latent`, the head revision's
# latent as a pgvector `vector(20)` kept by a trigger on revisions, with its HNSW index, and the pg_trgm
# GIN index on names (registry/similar.py, registry/styles.py `suggest_names`).
DIALECT_SPECIFIC_OBJECTS = frozenset(
    {"style_fts", "ix_styles_search_tsv", "search_tsv", "latent", "ix_styles_latent_hnsw", "ix_styles_name_trgm"}
)


def is_dialect_specific(name: str | None) -> bool:
    """One of `DIALECT_SPECIFIC_OBJECTS`, or an FTS5 shadow table / trigger (``style_fts_*``)."""
    return name in DIALECT_SPECIFIC_OBJECTS or (name or "").startswith("style_fts_")


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's `include_object` hook (alembic/env.py and the drift tests): skip the hand-written objects."""
    return not is_dialect_specific(name)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("registry datetimes must be timezone-aware (UTC)")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(dt.UTC).replace(tzinfo=None)  # one text format, so ordering works
        return value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Names compare byte-wise on PostgreSQL too, so the prefix range scans of autocomplete use the index
# whatever the database's default collation (under en_US, '-' is ignored when sorting).
NameString = String(NAME_MAX).with_variant(String(NAME_MAX, collation="C"), "postgresql")


class PgVector(UserDefinedType):
    """pgvector's `vector` (PostgreSQL only; migration 0004). Known to reflection, so `alembic check`
    reads `styles.latent` without a warning; registry/similar.py casts its query vector to it."""

    cache_ok = True

    def __init__(self, dimensions: int | None = None) -> None:
        self.dimensions = dimensions

    def get_col_spec(self, **kw) -> str:
        return "vector" if self.dimensions is None else f"vector({self.dimensions})"


postgresql_base.ischema_names.setdefault("vector", PgVector)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # Discord user id
    display_name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Style(Base):
    __tablename__ = "styles"
    __table_args__ = (
        CheckConstraint("visibility IN ('public', 'guild', 'private')", name="visibility"),
        CheckConstraint("visibility != 'guild' OR guild_id IS NOT NULL", name="guild_style_has_guild"),
        # Keyset indexes: one per browse order, each ending in the id tie-breaker.
        Index("ix_styles_popular", "use_count", "id"),
        Index("ix_styles_favourites", "favourite_count", "id"),
        Index("ix_styles_trending", "trending_score", "id"),
        Index("ix_styles_owner", "owner_id", "id"),
        # Styles of one encoder version: the exact similar-styles path when a version is rare (migration 0004).
        Index("ix_styles_version", "version", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(NameString, unique=True)  # stored lower-case: unique case-insensitively
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    guild_id: Mapped[int | None] = mapped_column(BigInteger)  # guild of origin (None = made in DMs)
    visibility: Mapped[str] = mapped_column(String(8), default="public")
    description: Mapped[str] = mapped_column(String(DESCRIPTION_MAX), default="")
    tags: Mapped[str] = mapped_column(String(TAGS_MAX * (TAG_MAX + 1)), default="")  # space-separated, for search
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("styles.id"), index=True)  # forked from
    # The head revision, denormalised so `name` and `name@latest` resolve with one index lookup.
    head_number: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(SmallInteger)  # encoder version of the head revision
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # soft delete; the name stays taken
    # Denormalised counters, maintained when a generation finishes (see registry/usage.py).
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    favourite_count: Mapped[int] = mapped_column(Integer, default=0)
    trending_score: Mapped[float | None] = mapped_column(Float)  # log2 of the decayed use sum, see trending.py
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User] = relationship(lazy="raise")
    parent: Mapped[Style | None] = relationship(remote_side=[id], lazy="raise")

    @property
    def tag_list(self) -> list[str]:
        return self.tags.split()


class StyleTag(Base):
    """One row per (style, tag): the indexed form of `Style.tags` for the browse tag filter."""

    __tablename__ = "style_tags"
    __table_args__ = (Index("ix_style_tags_tag", "tag", "style_id"),)

    style_id: Mapped[int] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(TAG_MAX), primary_key=True)


class Revision(Base):
    """Immutable once written (only the preview image is filled in later)."""

    __tablename__ = "revisions"
    __table_args__ = (
        UniqueConstraint("style_id", "number"),
        CheckConstraint("number >= 1", name="number_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    style_id: Mapped[int] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1..n within the style
    code: Mapped[str] = mapped_column(String(21), index=True)  # canonical stylecode, version digit included
    version: Mapped[int] = mapped_column(SmallInteger)  # encoder version digit
    levels: Mapped[bytes] = mapped_column(LargeBinary(20))  # the 20 latent levels (0..63), one per byte
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str] = mapped_column(String(NOTE_MAX), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # WebP preview grid, rendered later by the worker. Never loaded unless asked for (undefer).
    preview_webp: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True, deferred_raiseload=True)

    style: Mapped[Style] = relationship(lazy="raise")
    author: Mapped[User] = relationship(lazy="raise")

    @property
    def reference(self) -> str:
        """``name@number``; needs `style` loaded."""
        return f"{self.style.name}@{self.number}"


_UNFINISHED_SQL = text("status IN ('queued', 'running')")
_UNDELIVERED_SQL = text("delivered_at IS NULL AND status IN ('done', 'failed')")


class Usage(Base):
    """One generation request (one job), from queueing to its result message."""

    __tablename__ = "usages"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="status"),
        Index("ix_usages_style_queued", "style_id", "queued_at"),
        # style_history's recent uses in the asking guild, newest first (migration 0002).
        Index("ix_usages_style_guild_queued", "style_id", "guild_id", "queued_at", "id"),
        Index("ix_usages_user_queued", "user_id", "queued_at"),
        # Partial: restart recovery reads only the few unfinished jobs among millions of rows.
        Index("ix_usages_unfinished", "status", sqlite_where=_UNFINISHED_SQL, postgresql_where=_UNFINISHED_SQL),
        # Partial, likewise: outcomes the bot has not posted yet (migration 0003).
        Index(
            "ix_usages_undelivered", "finished_at", sqlite_where=_UNDELIVERED_SQL, postgresql_where=_UNDELIVERED_SQL
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), unique=True)  # uuid4 hex, shared with bot and worker
    revision_id: Mapped[int | None] = mapped_column(ForeignKey("revisions.id"))  # None = a raw code
    style_id: Mapped[int | None] = mapped_column(ForeignKey("styles.id"))  # denormalised from the revision
    code: Mapped[str | None] = mapped_column(String(21))  # canonical code used (None = no style)
    user_id: Mapped[int] = mapped_column(BigInteger)  # Discord user id (no users row needed to record a use)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    # The request, complete enough to reproduce the images.
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(SmallInteger)
    guidance_scale: Mapped[float] = mapped_column(Float)
    strength: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(SmallInteger)
    height: Mapped[int] = mapped_column(SmallInteger)
    model_version: Mapped[int] = mapped_column(SmallInteger)
    count: Mapped[int] = mapped_column(SmallInteger, default=1)  # images in the job; seeds are seed..seed+count-1
    # Lifecycle.
    status: Mapped[str] = mapped_column(String(10), default="queued")
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    message_link: Mapped[str | None] = mapped_column(String(200))
    # When the bot posted the outcome (result or failure) for the user. A finished row without it was
    # never shown: restart recovery posts it (migration 0003).
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    revision: Mapped[Revision | None] = relationship(lazy="raise")
    style: Mapped[Style | None] = relationship(lazy="raise")


class Favourite(Base):
    __tablename__ = "favourites"
    __table_args__ = (Index("ix_favourites_style", "style_id"),)

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    style_id: Mapped[int] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class GuildHide(Base):
    """A guild's moderators hid this style within their guild."""

    __tablename__ = "guild_hides"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    style_id: Mapped[int] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"), primary_key=True)
    hidden_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class GuildSettings(Base):
    """Per-guild defaults for /imagine, edited with /settings. A guild without a row gets the defaults."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    default_strength: Mapped[float] = mapped_column(Float, default=0.9)  # the paper's default style strength
    default_steps: Mapped[int] = mapped_column(SmallInteger, default=20)
    allow_nsfw_outside_nsfw_channels: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
