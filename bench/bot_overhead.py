"""Benchmark: per-job overhead of dispatch (queue, database, result publish) against calling the engine directly.

One job at a time (no queueing behind other jobs), demo model (version 0) on the CPU, one 64 px image:

- direct: `StyleEngine.generate([request])`, nothing else;
- local: what the embedded bot does per job: `record_usage` (SQLite), `LocalDispatcher.submit`, the engine
  thread, usage row running -> done, PNG encoding, events back to the listener, until `JobDone`;
- redis: the same through Redis Streams (`RedisDispatcher` + a `RedisWorker` in this process, a real
  redis-server on loopback started here): submit script, XREADGROUP, per-job event stream, XACK.
  Skipped when no `redis-server` binary is installed.

Each round runs the three back to back; the overhead is the median over rounds of (path - direct) in the
same round, so a noisy neighbour on the machine hits both sides of each difference.
Target (issue 4): overhead <= 50 ms per job.

    python3 bench/bot_overhead.py                # 40 rounds, 4 steps at 64 px
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time

from bot_support import imagine_job, load_demo_engine, machine, median, migrated_registry, record, set_threads

from bot.dispatch.base import DispatchLimits
from bot.dispatch.local import LocalDispatcher
from bot.dispatch.redis_streams import RedisDispatcher, RedisKeys
from bot.jobs import JobDone
from bot.worker.models import ModelCache
from bot.worker.redis_worker import RedisWorker


def start_redis() -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


async def timed_job(dispatcher, session_factory, job) -> float:
    started = time.perf_counter()
    await record(session_factory, job)
    result = await (await dispatcher.submit(job)).result()
    elapsed = time.perf_counter() - started
    assert isinstance(result, JobDone), result
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (see bot_support.set_threads)")
    args = parser.parse_args()
    set_threads(args.threads)
    logging.disable(logging.INFO)

    engine = load_demo_engine()
    _, database, session_factory = await migrated_registry()
    limits = DispatchLimits(served_versions=(0,))  # production defaults: progress every 1.5 s, batch 4
    models = ModelCache(lambda version: engine)
    local = LocalDispatcher(limits=limits, models=models, session_factory=session_factory)
    await local.start()

    redis_server = start_redis()
    redis_bot = worker_task = None
    if redis_server is not None:
        keys = RedisKeys("bench")
        redis_bot = RedisDispatcher.from_url(redis_server[1], limits=limits, keys=keys)
        worker_redis = RedisDispatcher.from_url(redis_server[1], limits=limits).redis
        worker = RedisWorker(
            redis=worker_redis, limits=limits, models=models, session_factory=session_factory, keys=keys
        )
        worker_task = asyncio.create_task(worker.run())

    def job(index: int):
        return imagine_job(7, index, size=args.size, steps=args.steps)

    for index in range(3):  # warm-up: model, SQLite file, connections
        engine.generate(job(index).requests)
        await timed_job(local, session_factory, job(index))
        if redis_bot is not None:
            await timed_job(redis_bot, session_factory, job(index))

    direct, local_times, redis_times = [], [], []
    for index in range(args.rounds):
        started = time.perf_counter()
        engine.generate(job(index).requests)
        direct.append(time.perf_counter() - started)
        local_times.append(await timed_job(local, session_factory, job(index)))
        if redis_bot is not None:
            redis_times.append(await timed_job(redis_bot, session_factory, job(index)))

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"demo model, 1 image of {args.size} px, {args.steps} steps, {args.rounds} rounds (medians)")
    print(f"direct engine call:  {median(direct) * 1000:8.1f} ms")
    rows = [("local", local_times)] + ([("redis", redis_times)] if redis_times else [])
    for name, times in rows:
        differences = sorted((t - d) * 1000 for t, d in zip(times, direct, strict=True))
        overhead, p90 = median(differences), differences[int(0.9 * (len(differences) - 1))]
        print(
            f"{name + ' dispatch:':<20} {median(times) * 1000:8.1f} ms   overhead median {overhead:6.1f} ms, "
            f"p90 {p90:6.1f} ms ({median(times) / median(direct):.2f}x direct)   "
            f"target <= 50 ms: {'met' if overhead <= 50 else 'MISSED'}"
        )
    if redis_server is None:
        print("redis dispatch: skipped (no redis-server binary)")

    await local.close()
    if worker_task is not None:
        worker.stop()
        await worker_task
        await redis_bot.close()
        await worker_redis.aclose()
        redis_server[0].terminate()
        redis_server[0].wait()
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
