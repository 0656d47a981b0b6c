"""Helpers for the dispatch tests: jobs, usage rows, Redis workers, and a recording wrapper around the demo engine."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from bot.jobs import EncodeJob, ImagineJob, new_job_id
from stylecodes.codec import random_code

DEMO = 0


def png(seed: int = 0, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def imagine_job(
    user_id: int, *, count: int = 1, steps: int = 2, size: int = 64, seed: int = 1, prompt: str = "a cow", **kw: Any
) -> ImagineJob:
    from bot.jobs import consecutive_seeds
    from stylecodes.requests import GenerationRequest
    from stylecodes.styles import CodeStyle

    strength = {"strength": kw.pop("strength")} if "strength" in kw else {}

    style = random_code(DEMO, np.random.default_rng(seed))
    requests = [
        GenerationRequest(
            prompt=f"{prompt} {i}", seed=request_seed, styles=(CodeStyle(style, **strength),), steps=steps,
            width=size, height=size, **kw
        )
        for i, request_seed in enumerate(consecutive_seeds(seed, count))
    ]
    return ImagineJob(new_job_id(), user_id, guild_id=1, channel_id=2, version=DEMO, requests=requests)


def encode_job(user_id: int, image: bytes | None = None) -> EncodeJob:
    return EncodeJob(new_job_id(), user_id, DEMO, png(user_id) if image is None else image)


async def record(session_factory, job: ImagineJob, *, revision_id: int | None = None) -> None:
    """What the front end does before submit: a `queued` usage row with the job's id (of a named style's
    revision when `revision_id` is given, else of the job's raw code)."""
    from registry.usage import record_usage

    first = job.requests[0]
    async with session_factory() as session:
        await record_usage(
            session,
            job_id=job.job_id,
            user_id=job.user_id,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            prompt=first.prompt,
            seed=first.seed,
            steps=first.steps,
            guidance_scale=first.guidance_scale,
            strength=first.code_style.strength,
            width=first.width,
            height=first.height,
            model_version=job.version,
            code=None if revision_id is not None else first.code_style.code.canonical,
            revision_id=revision_id,
            count=len(job.requests),
        )


async def taken_by_a_dead_worker(redis, keys, version: int = DEMO) -> str:
    """A worker that reads the next job of `version` and dies before acking it; returns the entry id."""
    from bot.protocol.streams import GROUP

    await redis.xgroup_create(keys.stream(version), GROUP, id="0", mkstream=True)
    [[_, [(entry_id, _fields)]]] = await redis.xreadgroup(GROUP, "dead-worker", {keys.stream(version): ">"}, count=1)
    return entry_id


async def named_style(session_factory, job: ImagineJob, name: str = "neon-noir"):
    """A saved style whose code is the job's: record the job with `revision_id=revision.id`."""
    from registry.styles import create_style

    async with session_factory() as session:
        code = job.requests[0].code_style.code
        return await create_style(session, name=name, code=code, owner_id=job.user_id, guild_id=None)


async def use_count(session_factory, style_id: int) -> int:
    """`Style.use_count`: what a second `done` of one job would push past the real number of uses."""
    from sqlalchemy import select

    from registry.models import Style

    async with session_factory() as session:
        return int(await session.scalar(select(Style.use_count).where(Style.id == style_id)))


async def usage(session_factory, job_id: str):
    from registry.usage import get_usage

    async with session_factory() as session:
        return await get_usage(session, job_id)


async def done_count(session_factory, job_id: str) -> int:
    from sqlalchemy import func, select

    from registry.models import Usage

    async with session_factory() as session:
        statement = select(func.count()).where(Usage.job_id == job_id, Usage.status == "done")
        return int(await session.scalar(statement))


class RecordingEngine:
    """The real demo engine, recording each call; `hold()` parks the next call until `release()`.

    Holding the engine thread lets a test queue several jobs before the worker picks its next batch,
    so what lands in one batch is decided by the dispatcher, not by timing.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.version = engine.version
        self.generate_calls: list[list[Any]] = []  # the requests of each generate call
        self.encode_calls: list[int] = []  # images per encode call
        self.fail_with: Exception | None = None
        self.fail_on_prompt: str | None = None  # fail any call that contains this prompt
        self._gate: threading.Event | None = None
        self.entered = threading.Event()  # set when a call is parked at the gate

    def hold(self) -> None:
        self._gate = threading.Event()
        self.entered.clear()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
        self._gate = None

    def _wait_gate(self) -> None:
        gate = self._gate
        if gate is not None:
            self.entered.set()
            gate.wait(timeout=30)

    def encode(self, images):
        self.encode_calls.append(len(images))
        self._wait_gate()
        return self.engine.encode(images)

    def generate(self, requests, on_step=None):
        self.generate_calls.append(list(requests))
        self._wait_gate()
        if self.fail_with is not None:
            raise self.fail_with
        if any(request.prompt == self.fail_on_prompt for request in requests):
            raise ValueError(f"cannot paint {self.fail_on_prompt!r}")
        return self.engine.generate(requests, on_step=on_step)


# --- Redis ---------------------------------------------------------------------------------------------


def redis_limits(**overrides):
    from bot.protocol.limits import DispatchLimits

    return DispatchLimits(**{"served_versions": (DEMO,), "progress_interval_s": 0.0, **overrides})


async def mark_live(redis, keys, versions=(DEMO,), name: str = "standby") -> None:
    """Beat as a worker serving `versions` (as a worker that is loading its models does), so submits are taken."""
    from bot.protocol.streams import beat

    await beat(redis, keys, name, versions)


@contextlib.asynccontextmanager
async def running_worker(redis, keys, engine, session_factory, *, limits=None, **options):
    """A `RedisWorker` task in this process (its own engine thread), stopped and awaited on exit."""
    from bot.worker.models import ModelCache
    from bot.worker.redis_worker import RedisWorker

    worker = RedisWorker(
        redis=redis,
        limits=limits or redis_limits(),
        models=ModelCache(lambda version: engine),
        session_factory=session_factory,
        keys=keys,
        read_block_ms=100,
        **options,
    )
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: _joined(redis, keys, worker), 10, "the worker to start")
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


async def _joined(redis, keys, worker) -> bool:
    version = worker.limits.served_versions[0]
    return await redis.zscore(keys.workers(version), worker.consumer) is not None


async def wait_for(predicate, within_s: float, what: str):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


async def job_events(redis, keys, job_id: str) -> list[tuple[float, dict]]:
    """The job's event stream as (seconds since the epoch, event dict), from the entry ids."""
    import json

    entries = await redis.xrange(keys.events(job_id))
    return [(int(entry_id.split("-")[0]) / 1000, json.loads(fields["event"])) for entry_id, fields in entries]
