"""The limits a deployment runs under, the same for the bot side (what `submit` accepts) and the worker side
(how large a batch grows, how often progress is published)."""

from __future__ import annotations

from dataclasses import dataclass

from bot import metrics
from bot.config import Settings
from stylecodes.versions import UnservedVersionError, check_served


@dataclass(frozen=True)
class DispatchLimits:
    """Fairness and batching knobs shared by both transports (defaults are the issue's)."""

    served_versions: tuple[int, ...]  # the model versions this deployment's workers load
    max_jobs_per_user: int = 2  # queued + running per user, so one user cannot fill the queue
    queue_cap: int = 100  # queued + running in total before "busy, try again in a minute"
    max_batch_size: int = 4  # samples per engine call (the most one /imagine asks for)
    progress_interval_s: float = 1.5  # Discord rate-limits message edits; at most one progress event per interval
    # Redis: a job still queued after this long, while no live worker serves its version, is failed with the
    # reason (instead of "Queued" forever). The embedded worker cannot be missing.
    max_queue_wait_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchLimits:
        return cls(
            served_versions=tuple(settings.versions_served),
            max_jobs_per_user=settings.max_jobs_per_user,
            queue_cap=settings.queue_cap,
            max_batch_size=settings.max_batch_size,
            progress_interval_s=settings.progress_interval_s,
            max_queue_wait_s=settings.max_queue_wait_s,
        )

    def check_served(self, version: int) -> None:
        """Refuse, at submit, a job for a model version no worker of this deployment loads."""
        try:
            check_served(version, self.served_versions)
        except UnservedVersionError:
            metrics.JOBS_REJECTED.labels("unserved_version").inc()
            raise
