"""Generation history: record a job, move it through its lifecycle, recover unfinished jobs, history.

Lifecycle: queued -> running -> done | failed | cancelled (queued may also go straight to failed or
cancelled, or to done). A style's counters (`use_count`, `trending_score`, `last_used_at`) move when
a generation *finishes* (`done`), so popularity counts images people actually got.
"""

from __future__ import annotations

import datetime as dt
import re
import weakref
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from ._sql import atomic
from .errors import InvalidStatusError, RegistryError, UsageNotFoundError
from .models import UNFINISHED_STATUSES, USAGE_STATUSES, Revision, Style, Usage, utcnow
from .sqlfuncs import day_of
from .styles import get_style, to_code
from .trending import add_use

_NEXT_STATUSES = {
    "queued": {"running", "done", "failed", "cancelled"},
    "running": {"done", "failed", "cancelled"},
}
MAX_PROMPT = 2000
MAX_ERROR = 2000


async def record_usage(
    session: AsyncSession,
    *,
    job_id: str,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    prompt: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    strength: float,
    width: int,
    height: int,
    model_version: int,
    negative_prompt: str = "",
    code: str | None = None,
    revision_id: int | None = None,
    count: int = 1,
) -> Usage:
    """Insert a `queued` usage row for one job. `revision_id` for a named style, else `code` (or neither)."""
    if not (isinstance(job_id, str) and _JOB_ID.match(job_id)):
        raise RegistryError(f"A job id is a uuid4 hex string (32 characters 0-9a-f), got `{job_id!r}`.")
    canonical = None if code is None else to_code(code).canonical
    style_id = None
    async with atomic(session):
        if revision_id is not None:
            style_id, canonical = await _revision_origin(session, revision_id)
        values = dict(
            job_id=job_id,
            revision_id=revision_id,
            style_id=style_id,
            code=canonical,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            prompt=prompt[:MAX_PROMPT],
            negative_prompt=(negative_prompt or "")[:MAX_PROMPT],
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            strength=strength,
            width=width,
            height=height,
            model_version=model_version,
            count=count,
            status="queued",
            queued_at=utcnow(),
        )
        try:
            # One constant Core statement (compiled once, cached): this is the bot's hottest write.
            usage_id = (await session.execute(_INSERT_USAGE, values)).inserted_primary_key[0]
        except IntegrityError:
            raise RegistryError(f"A job with id `{job_id}` was already recorded.") from None
    return Usage(id=usage_id, **values)


_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_INSERT_USAGE = insert(Usage.__table__)
# Revisions are immutable, so (style id, code) per revision id can be cached for good: per engine
# (ids are per database), bounded.
_REVISION_ORIGINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REVISION_ORIGINS_MAX = 50_000


async def _revision_origin(session: AsyncSession, revision_id: int) -> tuple[int, str]:
    cache = _REVISION_ORIGINS.setdefault(session.get_bind(), {})
    origin = cache.get(revision_id)
    if origin is None:
        row = (
            await session.execute(select(Revision.style_id, Revision.code).where(Revision.id == revision_id))
        ).one_or_none()
        if row is None:
            raise RegistryError(f"There is no revision with id {revision_id}.")
        if len(cache) >= _REVISION_ORIGINS_MAX:
            cache.clear()
        origin = cache[revision_id] = (row.style_id, row.code)
    return origin


async def set_usage_status(
    session: AsyncSession,
    job_id: str,
    status: str,
    *,
    error: str | None = None,
    message_link: str | None = None,
) -> Usage:
    """Move a job along its lifecycle, stamping started/finished times; `done` counts a use of the style."""
    if status not in USAGE_STATUSES:
        raise InvalidStatusError(f"`{status}` is not a job status; use one of {', '.join(USAGE_STATUSES)}.")
    async with atomic(session):
        usage = await session.scalar(
            select(Usage).where(Usage.job_id == job_id).with_for_update().execution_options(populate_existing=True)
        )
        if usage is None:
            raise UsageNotFoundError(f"No job with id `{job_id}` was recorded.")
        if status not in _NEXT_STATUSES.get(usage.status, set()):
            raise InvalidStatusError(f"Job `{job_id}` is `{usage.status}` and cannot become `{status}`.")
        now = utcnow()
        changes: dict = {"status": status, "started_at" if status == "running" else "finished_at": now}
        if error is not None:
            changes["error"] = error[:MAX_ERROR]
        if message_link is not None:
            changes["message_link"] = message_link[:200]
        # Compare-and-set on the old status: of two racing updates (worker "done", user "cancelled"),
        # exactly one applies, on SQLite too (where FOR UPDATE does not exist).
        result = await session.execute(
            update(Usage).where(Usage.id == usage.id, Usage.status == usage.status).values(**changes)
        )
        if result.rowcount == 0:
            raise InvalidStatusError(f"Job `{job_id}` changed status meanwhile; `{status}` was not applied.")
        for key, value in changes.items():
            set_committed_value(usage, key, value)
        if status == "done" and usage.style_id is not None:
            await _count_use(session, usage.style_id, usage.queued_at)
    return usage


async def set_usage_message_link(session: AsyncSession, job_id: str, message_link: str) -> None:
    """Record where the result was posted, at any point in the job's life (often after `done`)."""
    async with atomic(session):
        result = await session.execute(
            update(Usage).where(Usage.job_id == job_id).values(message_link=message_link[:200])
        )
        if result.rowcount == 0:
            raise UsageNotFoundError(f"No job with id `{job_id}` was recorded.")


async def _count_use(session: AsyncSession, style_id: int, when: dt.datetime) -> None:
    # The row lock (PostgreSQL) / the write transaction (SQLite) makes this read-modify-write safe.
    score, last_used = (
        await session.execute(
            select(Style.trending_score, Style.last_used_at).where(Style.id == style_id).with_for_update()
        )
    ).one()
    await session.execute(
        update(Style)
        .where(Style.id == style_id)
        .values(
            use_count=Style.use_count + 1,
            trending_score=add_use(score, when),
            last_used_at=when if last_used is None else max(last_used, when),
        )
    )


async def unfinished_usages(session: AsyncSession) -> list[Usage]:
    """Jobs still queued or running (oldest first): what a restarted bot must resume or fail."""
    statement = select(Usage).where(Usage.status.in_(UNFINISHED_STATUSES)).order_by(Usage.id)
    return list(await session.scalars(statement))


async def get_usage(session: AsyncSession, job_id: str) -> Usage:
    usage = await session.scalar(select(Usage).where(Usage.job_id == job_id))
    if usage is None:
        raise UsageNotFoundError(f"No job with id `{job_id}` was recorded.")
    return usage


@dataclass
class StyleHistory:
    style: Style
    recent: list[Usage]  # newest first, with `revision` loaded
    uses_per_revision: dict[int, int]  # revision number -> finished generations
    uses_per_day: list[tuple[dt.date, int]]  # oldest first, days with at least one finished generation


async def style_history(
    session: AsyncSession,
    name: str,
    *,
    user_id: int | None,
    guild_id: int | None,
    recent: int = 10,
    days: int = 30,
) -> StyleHistory:
    """Recent generations with a visible style, and finished-generation counts per revision and per day."""
    style = await get_style(session, name, user_id=user_id, guild_id=guild_id)
    recent_rows = await session.scalars(
        select(Usage)
        .where(Usage.style_id == style.id)
        .order_by(Usage.queued_at.desc(), Usage.id.desc())
        .limit(recent)
        .options(selectinload(Usage.revision))
    )
    per_revision = await session.execute(
        select(Revision.number, func.count())
        .join(Usage, Usage.revision_id == Revision.id)
        .where(Usage.style_id == style.id, Usage.status == "done")
        .group_by(Revision.number)
        .order_by(Revision.number)
    )
    since = utcnow() - dt.timedelta(days=days)
    day = day_of(Usage.queued_at)
    per_day = await session.execute(
        select(day, func.count())
        .where(Usage.style_id == style.id, Usage.status == "done", Usage.queued_at >= since)
        .group_by(day)
        .order_by(day)
    )
    return StyleHistory(
        style=style,
        recent=list(recent_rows),
        uses_per_revision={number: count for number, count in per_revision},
        uses_per_day=[(_as_date(value), count) for value, count in per_day],
    )


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
