"""Helpers for the dispatch tests: jobs, usage rows, and a recording wrapper around the real demo engine."""

from __future__ import annotations

import io
import threading
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
    from stylecodes.engine import GenerationRequest

    style = random_code(DEMO, np.random.default_rng(seed))
    requests = [
        GenerationRequest(
            prompt=f"{prompt} {i}", seed=seed + i, style=style, steps=steps, width=size, height=size, **kw
        )
        for i in range(count)
    ]
    return ImagineJob(new_job_id(), user_id, guild_id=1, channel_id=2, version=DEMO, requests=requests)


def encode_job(user_id: int, image: bytes | None = None) -> EncodeJob:
    return EncodeJob(new_job_id(), user_id, DEMO, png(user_id) if image is None else image)


async def record(session_factory, job: ImagineJob) -> None:
    """What the front end does before submit: a `queued` usage row with the job's id."""
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
            strength=first.strength,
            width=first.width,
            height=first.height,
            model_version=job.version,
            code=None if first.style is None else first.style.canonical,
            count=len(job.requests),
        )


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
