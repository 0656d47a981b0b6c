"""Shared setup for the bot/worker benchmarks: a migrated SQLite registry, the demo engine, jobs."""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch

from bot.jobs import ImagineJob, new_job_id
from registry.db import create_engine, create_session_factory, upgrade_to_head
from registry.usage import record_usage
from stylecodes.codec import random_code
from stylecodes.engine import StyleEngine
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle

DEMO = 0


def set_threads(threads: int) -> None:
    """Torch intra-op threads. On a shared, oversubscribed CPU, spinning OpenMP threads make timings swing
    by 10-50x; one thread per process gives stable numbers (and is what a CPU worker next to a bot wants)."""
    torch.set_num_threads(threads)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, Python {sys.version.split()[0]}"


async def migrated_registry() -> tuple[str, object, object]:
    """(url, engine, session_factory) of a fresh SQLite registry in a temp dir."""
    path = Path(tempfile.mkdtemp(prefix="bot-bench-")) / "stylecodes.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_to_head(url)
    engine = create_engine(url)
    return url, engine, create_session_factory(engine)


def load_demo_engine() -> StyleEngine:
    return StyleEngine.load(DEMO, device="cpu")


def request(index: int, *, size: int, steps: int) -> GenerationRequest:
    import numpy as np

    style = random_code(DEMO, np.random.default_rng(index))
    return GenerationRequest(
        f"a cow number {index}", seed=index, styles=(CodeStyle(style),), steps=steps, width=size, height=size
    )


def imagine_job(user_id: int, index: int, *, size: int, steps: int) -> ImagineJob:
    return ImagineJob(new_job_id(), user_id, None, 1, DEMO, [request(index, size=size, steps=steps)])


async def record(session_factory, job: ImagineJob) -> None:
    r = job.requests[0]
    async with session_factory() as session:
        await record_usage(
            session, job_id=job.job_id, user_id=job.user_id, guild_id=job.guild_id, channel_id=job.channel_id,
            prompt=r.prompt, seed=r.seed, steps=r.steps, guidance_scale=r.guidance_scale,
            strength=r.code_style.strength, width=r.width, height=r.height, model_version=job.version,
            code=r.code_style.code.canonical, count=1,
        )  # fmt: skip


def median(values: list[float]) -> float:
    return statistics.median(values)
