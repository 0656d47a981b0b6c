"""Generation history: record a job, move it through its lifecycle, recover unfinished jobs, history.

Lifecycle: queued -> running -> done | failed | cancelled (queued may also go straight to failed or
cancelled, or to done). A style's counters (`use_count`, `trending_score`, `last_used_at`) move when
a generation *finishes* (`done`), so popularity counts images people actually got.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import weakref
from dataclasses import dataclass
from numbers import Integral, Real

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from ._sql import atomic
from .errors import (
    InvalidJobIdError,
    InvalidStatusError,
    InvalidUsageError,
    RevisionNotFoundError,
    UsageNotFoundError,
)
from .models import UNFINISHED_STATUSES, USAGE_STATUSES, Revision, Style, Usage, utcnow
from .names import INT32_MAX, check_limit
from .sqlfuncs import day_of
from .styles import get_style, to_code
from .trending import add_use
from .usage_writer import duplicate_job, insert_usages, usage_writer

_NEXT_STATUSES = {
    "queued": {"running", "done", "failed", "cancelled"},
    "running": {"done", "failed", "cancelled"},
}
MAX_PROMPT = 2000
MAX_ERROR = 2000
SEED_RANGE = (0, 2**63 - 1)  # a signed 64-bit column
SMALLINT_MAX = 2**15 - 1  # steps, width, height, model version and image count are SMALLINT columns
DISCORD_ID_MAX = 2**63 - 1
HISTORY_RECENT_MAX = 25
HISTORY_DAYS_MAX = 3660


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
    """Insert a `queued` usage row for one job. `revision_id` for a named style, else `code` (or neither).

    Every field is checked before anything is written: `InvalidJobIdError`, `InvalidUsageError` (a field
    of the wrong type or out of its column's range), `InvalidCodeError`, `RevisionNotFoundError` (no
    such revision id) and `DuplicateJobError` (the job id was already recorded).

    The row is written by the engine's usage writer (registry/usage_writer.py), in one INSERT and one
    commit with the rows of concurrent calls; it is committed when this returns.
    """
    if not (isinstance(job_id, str) and _JOB_ID.match(job_id)):
        raise InvalidJobIdError(f"A job id is a uuid4 hex string (32 characters 0-9a-f), got `{job_id!r}`.")
    user_id = _whole("user_id", user_id, 0, DISCORD_ID_MAX)
    guild_id = None if guild_id is None else _whole("guild_id", guild_id, 0, DISCORD_ID_MAX)
    channel_id = None if channel_id is None else _whole("channel_id", channel_id, 0, DISCORD_ID_MAX)
    if not isinstance(prompt, str):
        raise InvalidUsageError(f"The prompt must be text, got {type(prompt).__name__}.")
    if not isinstance(negative_prompt, str | None):
        raise InvalidUsageError(f"The negative prompt must be text, got {type(negative_prompt).__name__}.")
    seed = _whole("seed", seed, *SEED_RANGE)
    steps = _whole("steps", steps, 1, SMALLINT_MAX)
    width = _whole("width", width, 1, SMALLINT_MAX)
    height = _whole("height", height, 1, SMALLINT_MAX)
    model_version = _whole("model_version", model_version, 0, SMALLINT_MAX)
    count = _whole("count", count, 1, SMALLINT_MAX)
    guidance_scale, strength = _finite("guidance_scale", guidance_scale), _finite("strength", strength)
    if revision_id is not None:
        revision_id = _whole("revision_id", revision_id, 1, INT32_MAX, error=RevisionNotFoundError)
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
    writer = usage_writer(session)
    if writer is not None:
        usage_id = await writer.insert(values)  # batched with concurrent calls; committed when it returns
    else:  # a session bound to one connection: written through it
        async with atomic(session):
            usage_id = (await insert_usages(await session.connection(), [values])).get(job_id)
        if usage_id is None:
            raise duplicate_job(job_id)
    return Usage(id=usage_id, **values)


def _whole(what: str, value, low: int, high: int, *, error: type = InvalidUsageError) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise error(f"`{what}` must be a whole number from {low} to {high}, got {value!r}.")
    return int(value)


def _finite(what: str, value) -> float:
    try:
        number = float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidUsageError(f"`{what}` must be a finite number, got {value!r}.")
    return number


_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
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
            raise RevisionNotFoundError(f"There is no revision with id {revision_id}; resolve the style again.")
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


async def mark_usage_delivered(session: AsyncSession, job_id: str, *, message_link: str | None = None) -> None:
    """The bot posted the job's outcome (its images, or why it failed), at `message_link` when given.

    The first delivery time is kept; a later call may still add the link. A finished row never marked
    delivered is what restart recovery posts (`undelivered_usages`).
    """
    values: dict = {"delivered_at": func.coalesce(Usage.delivered_at, utcnow())}
    if message_link is not None:
        values["message_link"] = message_link[:200]
    async with atomic(session):
        result = await session.execute(update(Usage).where(Usage.job_id == job_id).values(**values))
        if result.rowcount == 0:
            raise UsageNotFoundError(f"No job with id `{job_id}` was recorded.")


async def undelivered_usages(session: AsyncSession, *, since: dt.datetime) -> list[Usage]:
    """Jobs that finished (`done` or `failed`) at or after `since` and whose outcome no bot posted, oldest first."""
    statement = (
        select(Usage)
        .where(Usage.delivered_at.is_(None), Usage.status.in_(("done", "failed")), Usage.finished_at >= since)
        .order_by(Usage.id)
    )
    return list(await session.scalars(statement))


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
    recent: list[Usage]  # newest first, with `revision` loaded; only uses the asker may see (see style_history)
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
    """Recent generations with a visible style, and finished-generation counts per revision and per day.

    `user_id` and `guild_id` are the asking context: they decide whether the style is visible, and
    `recent` lists only uses made in the asking guild (`guild_id`), or in DMs (`guild_id=None`) only
    the asker's own uses, since recent uses carry prompts and message links. The counts are aggregates
    over every use of the style.
    """
    check_limit(recent, HISTORY_RECENT_MAX, what="recent", minimum=0)
    check_limit(days, HISTORY_DAYS_MAX, what="days")
    style = await get_style(session, name, user_id=user_id, guild_id=guild_id)
    if guild_id is not None:
        asked = Usage.guild_id == guild_id  # served by ix_usages_style_guild_queued
    elif user_id is not None:
        asked = Usage.user_id == user_id
    else:
        asked = None  # no asker: no recent uses
    recent_rows = []
    if asked is not None and recent > 0:
        recent_rows = list(
            await session.scalars(
                select(Usage)
                .where(Usage.style_id == style.id, asked)
                .order_by(Usage.queued_at.desc(), Usage.id.desc())
                .limit(recent)
                .options(selectinload(Usage.revision))
            )
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
        recent=recent_rows,
        uses_per_revision={number: count for number, count in per_revision},
        uses_per_day=[(_as_date(value), count) for value, count in per_day],
    )


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
