"""Restart recovery: every job the registry still has as queued or running is resumed or failed, and the user told.

Call once at bot start, after `dispatcher.start()` and before taking commands. For each unfinished usage row:

1. the transport still has the job (Redis: queued or running on a worker, or finished while the bot was
   down): `on_resumed(usage, handle)` gets a handle that replays its events, result included;
2. else (the in-process queue died with the old process) the job is rebuilt from the usage row, which
   holds the whole request, and submitted again: `on_resumed(usage, handle)` as well;
3. if neither works (no `on_resumed` given, a bad row, the queue full, the version no longer served),
   the row is marked failed with the reason and `notify(usage, text)` tells the user.

No job is silently lost: each row ends in exactly one of those three branches.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.dispatch.base import Dispatcher, JobHandle
from bot.jobs import ImagineJob, JobRejectedError, consecutive_seeds, log_job_event

if TYPE_CHECKING:
    from registry.models import Usage

log = logging.getLogger(__name__)

Notify = Callable[[Any, str], Awaitable[None]]  # (usage row, user-facing text)
OnResumed = Callable[[Any, JobHandle], Awaitable[None]]  # (usage row, handle to follow to the result)

RESTART_FAILURE = (
    "The bot restarted before your job could finish, and it could not be resumed ({why}). Please run it again."
)


@dataclass
class RecoveryReport:
    reattached: list[str] = field(default_factory=list)  # job ids still alive in the transport
    resubmitted: list[str] = field(default_factory=list)  # job ids rebuilt from the registry and queued again
    failed: list[str] = field(default_factory=list)  # job ids marked failed (user notified)


def job_from_usage(usage: Usage) -> ImagineJob:
    """Rebuild an imagine job from its usage row: the row holds the whole request (seeds seed..seed+count-1)."""
    from stylecodes.codec import parse_code
    from stylecodes.engine import GenerationRequest

    style = None if usage.code is None else parse_code(usage.code)
    requests = [
        GenerationRequest(
            prompt=usage.prompt,
            seed=seed,
            negative_prompt=usage.negative_prompt or "",
            style=style,
            strength=usage.strength,
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
) -> RecoveryReport:
    from bot.worker.runner import advance_usage
    from registry.usage import unfinished_usages

    async with session_factory() as session:
        usages = await unfinished_usages(session)
    report = RecoveryReport()
    for usage in usages:
        why = "the front end cannot follow resumed jobs"
        if on_resumed is not None:
            handle = await dispatcher.resume(usage.job_id)
            if handle is not None:
                report.reattached.append(usage.job_id)
                log_job_event("reattached", usage.job_id, status=usage.status)
                await on_resumed(usage, handle)
                continue
            try:
                handle = await dispatcher.submit(job_from_usage(usage))
            except (JobRejectedError, ValueError) as exc:  # incl. UnservedVersionError, CodeError
                why = str(exc)
            else:
                report.resubmitted.append(usage.job_id)
                log_job_event("resubmitted", usage.job_id, status=usage.status)
                await on_resumed(usage, handle)
                continue
        text = RESTART_FAILURE.format(why=why.rstrip("."))
        await advance_usage(session_factory, usage.job_id, "failed", error=text)
        report.failed.append(usage.job_id)
        log_job_event("failed", usage.job_id, code="restart", reason=text)
        await notify(usage, text)
    return report
