"""Benchmark: throughput gain of batching compatible generation requests (batch of 1 vs batch of 4).

CAVEAT: no GPU was lent to this task, so this runs on the CPU with the demo model (version 0, tiny random
weights). A CPU is already busy with one sample, so batching gains far less here than on a GPU, where a
batch of four SD1.5 samples costs little more than one; treat these numbers as a lower bound of the gain
and as a check that the worker really batches, not as the production figure.

Two measurements, each the median of `--repeats` runs over the same `--images` images:

- engine: `StyleEngine.generate` called directly, `--images` calls of 1 request vs `--images/4` calls of 4;
- dispatch: the same images as separate jobs from different users through the embedded dispatcher
  (`LocalDispatcher`, SQLite registry, PNG results), with `max_batch_size` 1 vs 4: what the bot gets.

    python3 bench/bot_batching.py        # 16 images, 10 steps, 64 px and 128 px, median of 3 interleaved runs
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from bot_support import imagine_job, load_demo_engine, machine, median, migrated_registry, record, request, set_threads

from bot.dispatch.local import LocalDispatcher
from bot.jobs import JobDone
from bot.protocol.limits import DispatchLimits
from bot.worker.models import ModelCache


def engine_run(engine, *, images: int, batch: int, size: int, steps: int) -> float:
    started = time.perf_counter()
    for first in range(0, images, batch):
        engine.generate([request(i, size=size, steps=steps) for i in range(first, first + batch)])
    return time.perf_counter() - started


async def dispatch_run(engine, session_factory, *, images: int, batch: int, size: int, steps: int) -> float:
    limits = DispatchLimits(served_versions=(0,), max_batch_size=batch, queue_cap=1000)
    dispatcher = LocalDispatcher(limits=limits, models=ModelCache(lambda v: engine), session_factory=session_factory)
    jobs = [imagine_job(1000 + i, i, size=size, steps=steps) for i in range(images)]  # one user each
    for job in jobs:
        await record(session_factory, job)
    await dispatcher.start()
    try:
        started = time.perf_counter()
        handles = [await dispatcher.submit(job) for job in jobs]
        results = [await handle.result() for handle in handles]
        elapsed = time.perf_counter() - started
    finally:
        await dispatcher.close()
    assert all(isinstance(r, JobDone) for r in results), results
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (see bot_support.set_threads)")
    args = parser.parse_args()
    set_threads(args.threads)
    assert args.images % 4 == 0, "--images must be a multiple of 4"
    logging.disable(logging.INFO)

    engine = load_demo_engine()
    _, database, session_factory = await migrated_registry()
    print(f"machine: {machine()}; demo model (version 0) on CPU; {args.images} images, {args.steps} steps")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'path':<9} {'size':>5} {'batch 1 img/s':>14} {'batch 4 img/s':>14} {'gain':>6}")
    for size in args.sizes:
        engine_run(engine, images=4, batch=4, size=size, steps=args.steps)  # warm-up: allocator, kernels
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so a noisy neighbour hurts every variant alike
            for batch in (1, 4):
                options = {"images": args.images, "batch": batch, "size": size, "steps": args.steps}
                times.setdefault(("engine", batch), []).append(engine_run(engine, **options))
                times.setdefault(("dispatch", batch), []).append(await dispatch_run(engine, session_factory, **options))
        for path in ("engine", "dispatch"):
            single, batched = (args.images / median(times[(path, batch)]) for batch in (1, 4))
            print(f"{path:<9} {size:>5} {single:>14.2f} {batched:>14.2f} {batched / single:>5.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
