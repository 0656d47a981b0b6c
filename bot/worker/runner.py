"""Runs one batch of compatible jobs through the engine and turns the outcome into job events.

Both transports use it: `run(batch)` calls the engine once on the engine thread (never on the event
loop), publishes throttled progress, and returns one terminal `Outcome` per job; `store(outcome)` then
persists it (registry usage row, revision preview). The transport publishes the outcome after that
(the Redis worker XACKs only after `store`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.jobs import (
    EncodeJob,
    EncodeResult,
    ImagineJob,
    ImagineResult,
    Job,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobStarted,
    PreviewJob,
    PreviewResult,
    job_size,
    log_job_event,
)
from bot.protocol.usage import TerminalEvent, advance_usage, stored_failure
from bot.worker.models import ModelCache
from registry.styles import set_revision_preview
from stylecodes.images import ImageError, load_image, png_bytes

log = logging.getLogger(__name__)

Publish = Callable[[Job, JobEvent], Awaitable[None]]


@dataclass
class Outcome:
    job: Job
    event: TerminalEvent


def preview_grid_webp(images: list[Image.Image]) -> bytes:
    """The four preview images as one 2x2 WebP grid."""
    width, height = images[0].size
    grid = Image.new("RGB", (2 * width, 2 * height), "white")
    for index, image in enumerate(images[:4]):
        grid.paste(image.convert("RGB"), ((index % 2) * width, (index // 2) * height))
    buffer = io.BytesIO()
    grid.save(buffer, format="WEBP", quality=85)
    return buffer.getvalue()


class BatchRunner:
    """Executes batches; one batch at a time per runner (one GPU)."""

    def __init__(
        self,
        *,
        models: ModelCache,
        session_factory: async_sessionmaker[AsyncSession],
        publish: Publish,
        executor: Executor,
        progress_interval_s: float = 1.5,
        step_delay_s: float = 0.0,
    ) -> None:
        self.models = models
        self.session_factory = session_factory
        self.publish = publish
        self.executor = executor
        self.progress_interval_s = progress_interval_s
        # Test-only: sleep this long in every denoising step so a test can kill a worker mid-job
        # (STYLECODES_TEST_STEP_DELAY_S for `python -m bot.worker`). 0 in production.
        self.step_delay_s = step_delay_s

    # --- Starting ----------------------------------------------------------------------------------

    async def start_job(self, job: Job, *, queued_at: float | None, worker: str = "local") -> JobFailed | None:
        """Usage row -> running, `JobStarted` published, wait time recorded. None: run the job now.

        A `JobFailed` (not published yet) when the registry has the job as failed or cancelled already (a
        redelivered job, or one given up while it waited): the caller ends the job with it and never runs it.
        A job the registry has as `done` is run again: its result was stored, but the worker died before
        handing it over, and nothing else holds the images. Storing it again changes nothing (the row stays
        `done`, its style's use counted once), so the user gets their images and the history stays right.
        """
        if isinstance(job, ImagineJob):
            status = await advance_usage(self.session_factory, job.job_id, "running")
            if status in ("failed", "cancelled"):
                log_job_event("skipped", job.job_id, kind=job.kind, status=status, worker=worker)
                return JobFailed(await stored_failure(self.session_factory, job.job_id), JobFailed.DUPLICATE)
            if status == "done":
                log_job_event("rerun", job.job_id, kind=job.kind, status=status, worker=worker)
        await self.publish(job, JobStarted())
        waited = None if queued_at is None else max(0.0, time.time() - queued_at)
        if waited is not None:
            metrics.JOB_WAIT_SECONDS.labels(job.kind, str(job.version)).observe(waited)
        log_job_event(
            "started", job.job_id, kind=job.kind, version=job.version, user_id=job.user_id, worker=worker,
            waited_s=f"{waited:.3f}" if waited is not None else "unknown",
        )  # fmt: skip
        return None

    # --- Running -----------------------------------------------------------------------------------

    async def run(self, batch: list[Job]) -> list[Outcome]:
        """One engine call for the whole batch. Never raises: an engine error fails every job in the batch."""
        kind = "encode" if isinstance(batch[0], EncodeJob) else "generate"
        metrics.BATCH_JOBS.labels(kind).observe(len(batch))
        metrics.BATCH_SAMPLES.labels(kind).observe(sum(job_size(job) for job in batch))
        version = str(batch[0].version)
        metrics.JOBS_RUNNING.labels(version).inc(len(batch))
        started = time.perf_counter()
        try:
            if kind == "encode":
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(self.executor, self._encode_blocking, batch)
            else:
                outcomes = await self._generate(batch)
        except Exception as exc:
            log.exception("batch of %d %s job(s) failed", len(batch), kind)
            if len(batch) > 1:
                outcomes = None  # one job may have spoilt the batch for everyone: run each alone below
            else:
                reason = f"The model failed on this job ({type(exc).__name__}: {exc}). Please try again later."
                outcomes = [Outcome(batch[0], JobFailed(reason, JobFailed.ENGINE_ERROR))]
        finally:
            metrics.JOBS_RUNNING.labels(version).dec(len(batch))
            metrics.record_gpu_memory()
        if outcomes is None:
            return [outcome for job in batch for outcome in await self.run([job])]
        seconds = time.perf_counter() - started
        for job in batch:
            metrics.JOB_RUN_SECONDS.labels(job.kind, str(job.version)).observe(seconds)
        log.debug("batch kind=%s jobs=%d seconds=%.3f", kind, len(batch), seconds)
        return outcomes

    def _encode_blocking(self, batch: list[EncodeJob]) -> list[Outcome]:
        events: dict[str, TerminalEvent] = {}
        readable: list[EncodeJob] = []
        images: list[Image.Image] = []
        for job in batch:
            try:
                images.append(load_image(job.image))
                readable.append(job)
            except ImageError as exc:
                events[job.job_id] = JobFailed(str(exc), JobFailed.BAD_INPUT)
        if images:
            engine = self.models.get(batch[0].version)
            codes = engine.encode(images)
            for job, code in zip(readable, codes, strict=True):
                events[job.job_id] = JobDone(EncodeResult([code]))
        return [Outcome(job, events[job.job_id]) for job in batch]

    async def _generate(self, batch: list[ImagineJob | PreviewJob]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue[tuple[Job, JobProgress] | None] = asyncio.Queue()

        async def pump() -> None:  # publishes progress in order, off the engine thread
            while (item := await progress.get()) is not None:
                try:
                    await self.publish(*item)
                except Exception:  # progress is best effort; the result still comes
                    log.warning("could not publish progress for job %s", item[0].job_id, exc_info=True)

        pump_task = asyncio.create_task(pump())

        def emit(item: tuple[Job, JobProgress]) -> None:  # called on the engine thread
            loop.call_soon_threadsafe(progress.put_nowait, item)

        try:
            return await loop.run_in_executor(self.executor, self._generate_blocking, batch, emit)
        finally:
            progress.put_nowait(None)
            await pump_task

    def _generate_blocking(
        self, batch: list[ImagineJob | PreviewJob], emit: Callable[[tuple[Job, JobProgress]], Any]
    ) -> list[Outcome]:
        requests = [request for job in batch for request in job.requests]
        offsets = [0]  # index of each job's first sample in the batch
        for job in batch[:-1]:
            offsets.append(offsets[-1] + len(job.requests))
        wants_previews = any(job.wants_previews for job in batch)
        last_sent = float("-inf")

        def on_step(step: int, total: int, make_previews: Callable[[], list[Image.Image]]) -> None:
            nonlocal last_sent
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
            now = time.monotonic()
            if now - last_sent < self.progress_interval_s or step >= total:
                return  # throttled; the last step is followed by the result itself
            last_sent = now
            previews = make_previews() if wants_previews else None  # built only when someone shows one
            for job, offset in zip(batch, offsets, strict=True):
                preview = png_bytes(previews[offset]) if previews is not None and job.wants_previews else None
                emit((job, JobProgress(step, total, preview)))

        engine = self.models.get(batch[0].version)
        results = engine.generate(requests, on_step=on_step)
        outcomes = []
        for job, offset in zip(batch, offsets, strict=True):
            mine = results[offset : offset + len(job.requests)]
            if isinstance(job, PreviewJob):
                payload: Any = PreviewResult(job.revision_id, preview_grid_webp([r.image for r in mine]))
            else:
                warnings = list(dict.fromkeys(w for r in mine for w in r.warnings))
                payload = ImagineResult(
                    images_png=[png_bytes(r.image) for r in mine],
                    nsfw=[r.nsfw for r in mine],
                    warnings=warnings,
                    metadata=[r.metadata for r in mine],
                )
            outcomes.append(Outcome(job, JobDone(payload)))
        return outcomes

    # --- Finishing ---------------------------------------------------------------------------------

    async def store(self, outcome: Outcome) -> None:
        """Persist the outcome: revision preview, usage row done/failed. Raises if the database does."""
        job, event = outcome.job, outcome.event
        if isinstance(event, JobDone) and isinstance(event.payload, PreviewResult):
            async with self.session_factory() as session:
                await set_revision_preview(session, event.payload.revision_id, event.payload.grid_webp)
                await session.commit()
        if isinstance(job, ImagineJob):
            await self.store_usage(job.job_id, event)

    async def store_usage(self, job_id: str, event: TerminalEvent) -> None:
        """The usage row -> done, or failed with the reason (also for a queue entry too broken to rebuild a job)."""
        if isinstance(event, JobDone):
            await advance_usage(self.session_factory, job_id, "done")
        else:
            await advance_usage(self.session_factory, job_id, "failed", error=event.reason)
