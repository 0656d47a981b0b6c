"""Restart recovery: every job whose outcome the user has not seen is resumed, posted or failed, and the user told.

Call once at bot start, after `dispatcher.start()`. It looks at the usage rows of the shards this process
runs (`owns`; all of them by default) that are

- **unfinished** (queued or running):
  1. the transport still has the job (Redis: queued or running on a worker, or finished while the bot was
     down): `on_resumed(usage, handle)` gets a handle that replays its events, result included;
  2. else (the in-process queue died with the old process) the job is rebuilt from the usage row, which
     holds the whole request, and submitted again: `on_resumed(usage, handle)` as well;
  3. if neither works (no `on_resumed` given, a bad row, the queue full, the version no longer served),
     the row is marked failed with the reason and `notify(usage, text)` tells the user;
- **finished but never posted** (done or failed within `REDELIVERY_WINDOW`, `delivered_at` unset: the bot
  stopped between the worker's result and its post):
  1. as above, a handle that replays the result where the transport still has it;
  2. else a `done` job is made again from its row (the same seeds give the same images; the worker stores
     the result idempotently, so the style's use is counted once), and a `failed` one is told its reason.

The bot marks a row delivered when it has posted the outcome (`registry.mark_usage_delivered`), so a
second restart does not post it again. A job another live bot process still follows (two processes running
the same shards during a rolling restart) is left to it: recovery waits, and adopts the job only if that
follower stops before the job ends, so its result is posted exactly once. No job is silently lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.dispatch.base import Dispatcher, FollowedElsewhere, JobHandle
from bot.jobs import ImagineJob, JobFailed, JobRejectedError, consecutive_seeds, log_job_event
from bot.protocol.usage import advance_usage, record_end, usage_status
from registry.models import Usage, utcnow
from registry.usage import undelivered_usages, unfinished_usages
from stylecodes.codec import parse_code
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle

log = logging.getLogger(__name__)

Notify = Callable[[Any, str], Awaitable[None]]  # (usage row, user-facing text)
OnResumed = Callable[[Any, JobHandle], Awaitable[None]]  # (usage row, handle to follow to the result)
Owns = Callable[[Any], bool]  # (usage row) -> does this bot process answer for it

RESTART_FAILURE = (
    "The bot restarted before your job could finish, and it could not be resumed ({why}). Please run it again."
)
REMAKE_FAILURE = (
    "Your images were finished while the bot restarted, but could not be posted, and making them again "
    "failed ({why}). Please run it again."
)
# Outcomes older than this are not posted after a restart: Redis keeps results for 24 h, and a day-old
# answer in a channel would only confuse.
REDELIVERY_WINDOW = dt.timedelta(hours=24)


@dataclass
class RecoveryReport:
    reattached: list[str] = field(default_factory=list)  # job ids still alive in the transport
    remade: list[str] = field(default_factory=list)  # finished, never posted, made again from the registry
    resubmitted: list[str] = field(default_factory=list)  # job ids rebuilt from the registry and queued again
    failed: list[str] = field(default_factory=list)  # job ids marked failed (user notified)
    followed_elsewhere: list[str] = field(default_factory=list)  # seen through by another live bot process


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule: the shard that receives a guild's events; direct messages come on shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def shard_owner(shard_count: int, shard_ids: Iterable[int]) -> Owns | None:
    """`owns` for a bot process running `shard_ids` of `shard_count` shards; None when it runs them all.

    Settings: `shard_owner(settings.shard_count, settings.shard_ids)`. A count of 0 (one connection) or -1
    (Discord picks, in one process) runs every shard.
    """
    ids = frozenset(shard_ids)
    if shard_count <= 0 or not ids or ids >= frozenset(range(shard_count)):
        return None
    return lambda usage: shard_of(usage.guild_id, shard_count) in ids


def job_from_usage(usage: Usage) -> ImagineJob:
    """Rebuild an imagine job from its usage row: the row holds the whole request (seeds seed..seed+count-1)."""
    styles = () if usage.code is None else (CodeStyle(parse_code(usage.code), usage.strength),)
    requests = [
        GenerationRequest(
            prompt=usage.prompt,
            seed=seed,
            negative_prompt=usage.negative_prompt or "",
            styles=styles,
            steps=usage.steps,
            guidance_scale=usage.guidance_scale,
            width=usage.width,
            height=usage.height,
        )
        for seed in consecutive_seeds(usage.seed, max(1, usage.count))
    ]
    return ImagineJob(
        job_id=usage.job_id,
        user_id=usage.user_id,
        guild_id=usage.guild_id,
        channel_id=usage.channel_id or 0,
        version=usage.model_version,
        requests=requests,
    )


async def recover_unfinished(
    session_factory: async_sessionmaker[AsyncSession],
    dispatcher: Dispatcher,
    notify: Notify,
    *,
    on_resumed: OnResumed | None = None,
    owns: Owns | None = None,
) -> RecoveryReport:
    """Resume, post or fail the jobs of this process's shards (`owns(usage)`; None = every row) whose
    outcome the user has not seen: see the module docstring.

    Returns when every row is settled: jobs another live bot process follows are waited for (see above).
    """
    def ours(rows: list[Usage]) -> list[Usage]:
        return [usage for usage in rows if owns is None or owns(usage)]

    async with session_factory() as session:
        unfinished = ours(await unfinished_usages(session))
        undelivered = ours(await undelivered_usages(session, since=utcnow() - REDELIVERY_WINDOW))
    report = RecoveryReport()

    async def attach(usage: Usage) -> bool:
        """Follow the job where the transport still has it. Raises FollowedElsewhere while another follows it."""
        if on_resumed is None:
            return False
        handle = await dispatcher.adopt(usage.job_id)
        if handle is None:
            return False
        report.reattached.append(usage.job_id)
        log_job_event("reattached", usage.job_id, status=usage.status)
        await on_resumed(usage, handle)
        return True

    async def submit_again(usage: Usage, made: list[str], event: str) -> str | None:
        """Rebuild the job from its row and queue it; None when queued, else why it could not be."""
        if on_resumed is None:
            return "the front end cannot follow resumed jobs"
        try:
            handle = await dispatcher.submit(job_from_usage(usage))
        except (JobRejectedError, ValueError) as exc:  # incl. UnservedVersionError, CodeError
            return str(exc).rstrip(".")
        made.append(usage.job_id)
        log_job_event(event, usage.job_id, status=usage.status)
        await on_resumed(usage, handle)
        return None

    async def rebuild_or_fail(usage: Usage) -> None:
        why = await submit_again(usage, report.resubmitted, "resubmitted")
        if why is None:
            return
        text = RESTART_FAILURE.format(why=why)
        await advance_usage(session_factory, usage.job_id, "failed", error=text)
        report.failed.append(usage.job_id)
        record_end(usage.job_id, ImagineJob.kind, usage.model_version, JobFailed(text, JobFailed.RESTART))
        await notify(usage, text)

    async def post_from_row(usage: Usage) -> None:
        """A finished job the transport forgot: make a `done` one again, tell a `failed` one its reason."""
        if usage.status == "failed":
            await notify(usage, f"your job failed: {usage.error or 'no reason was recorded'}")
            return
        why = await submit_again(usage, report.remade, "remade")
        if why is not None:
            await notify(usage, REMAKE_FAILURE.format(why=why))

    async def when_its_follower_stops(usage: Usage, busy: FollowedElsewhere) -> None:
        """Adopt the job if its live follower stops before handing over the outcome; else leave it be."""
        while not busy.delivered:
            await asyncio.sleep(busy.retry_after_s)
            try:
                if await attach(usage):
                    return
            except FollowedElsewhere as again:
                busy = again
                continue
            if await usage_status(session_factory, usage.job_id) in ("queued", "running"):
                return await rebuild_or_fail(usage)  # the transport lost it meanwhile
            break  # it ended, and the transport forgot it: its follower saw it through
        report.followed_elsewhere.append(usage.job_id)
        log_job_event("followed_elsewhere", usage.job_id, status=usage.status)

    waiting = []
    for rows, otherwise in ((unfinished, rebuild_or_fail), (undelivered, post_from_row)):
        for usage in rows:
            try:
                if not await attach(usage):
                    await otherwise(usage)
            except FollowedElsewhere as busy:
                waiting.append(when_its_follower_stops(usage, busy))
    await asyncio.gather(*waiting)
    return report
