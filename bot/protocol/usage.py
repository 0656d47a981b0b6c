"""A job's record, which both the bot side and the worker side keep: its usage row in the registry (the
job's history, moved on idempotently) and its end in the metrics and the log.

The worker records the rows of the jobs it runs; the bot side records the jobs it gives up (no live worker)
or cannot resume after a restart.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.jobs import Job, JobDone, JobFailed, log_job_event
from registry.errors import InvalidStatusError, UsageNotFoundError
from registry.usage import get_usage, set_usage_status

log = logging.getLogger(__name__)

TerminalEvent = JobDone | JobFailed

FINISHED_STATUSES = ("done", "failed", "cancelled")


async def advance_usage(
    session_factory: async_sessionmaker[AsyncSession], job_id: str, status: str, *, error: str | None = None
) -> str | None:
    """Move the usage row to `status` unless it is there already or has ended; returns its status afterwards.

    Idempotent, because a redelivered Redis job may pass here twice; a finished row never changes
    again, so a job is `done` at most once. None when the bot recorded no usage row for the job.
    """
    async with session_factory() as session:
        try:  # the usual case in one statement: the row moves on
            await set_usage_status(session, job_id, status, error=error)
            return status
        except UsageNotFoundError:
            log.warning("job %s has no usage row; its history is not recorded", job_id)
            return None
        except InvalidStatusError:  # already there, or finished: leave it as it is
            return (await get_usage(session, job_id)).status


async def usage_status(session_factory: async_sessionmaker[AsyncSession], job_id: str) -> str | None:
    """The usage row's status; None when the bot recorded no row for the job (encodes, previews)."""
    async with session_factory() as session:
        try:
            return (await get_usage(session, job_id)).status
        except UsageNotFoundError:
            return None


async def stored_failure(session_factory: async_sessionmaker[AsyncSession], job_id: str) -> str:
    """The user-facing reason of a job the registry has as failed or cancelled."""
    async with session_factory() as session:
        usage = await get_usage(session, job_id)
    if usage.status == "cancelled":
        return "This job was cancelled."
    return usage.error or "This job failed."


def record_outcome(job: Job, event: TerminalEvent) -> None:
    """Metrics and the structured log line for a job's end (also used for jobs failed outside a batch)."""
    record_end(job.job_id, job.kind, job.version, event)


def record_end(job_id: str, kind: str, version: int | str, event: TerminalEvent) -> None:
    """`record_outcome` for a job known only by its id, kind and version (a broken queue entry, a restart)."""
    outcome = "done" if isinstance(event, JobDone) else "failed"
    metrics.JOBS_FINISHED.labels(kind, outcome).inc()
    if isinstance(event, JobFailed):
        metrics.JOB_FAILURES.labels(event.code).inc()
        log_job_event("failed", job_id, kind=kind, version=version, code=event.code, reason=event.reason)
    else:
        log_job_event("done", job_id, kind=kind, version=version)
