"""Benchmark: per-job overhead of the bot (front end, queue, database, upload) against calling the engine directly.

One job at a time (no queueing behind other jobs), demo model (version 0) on the CPU, one 64 px image:

- direct: `StyleEngine.generate([request])`, nothing else;
- local: what the embedded bot does per job: `record_usage` (SQLite), `LocalDispatcher.submit`, the engine
  thread, usage row running -> done, PNG encoding, events back to the listener, until `JobDone`;
- redis: the same through Redis Streams (`RedisDispatcher` + a `RedisWorker` in this process, a real
  redis-server on loopback started here): submit script, XREADGROUP, per-job event stream, XACK.
  Skipped when no `redis-server` binary is installed;
- bot: the whole bot as `python -m bot` runs by default: the real `StylecodesBot` (cogs, command tree,
  error handler) receives a raw /imagine interaction (the same prompt, code, seed, strength, guidance and
  steps; `Settings.image_size` = the size) and runs it on the embedded `LocalDispatcher` above. Timed from
  handing the gateway payload to discord.py (`parse_interaction_create`) until the stand-in for Discord's
  REST API (tests/bot/frontend/standin.py, in its own process as in bench/bot_ack_latency.py; the clocks
  are the shared CLOCK_MONOTONIC) has received the final edit of the original response carrying the PNG.
  Between them: the deferral, the style parse, the guild settings read and usage insert, submit, the
  "Queued" edit, the job, the result embed and buttons, and the multipart upload.

Each round runs the paths back to back; the overhead is the median over rounds of (path - direct) in the
same round, so a noisy neighbour on the machine hits both sides of each difference.
Target (issue 4): overhead <= 50 ms per job.

    python3 bench/bot_overhead.py                # 40 rounds, 4 steps at 64 px
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import time

import aiohttp
import discord
from aiohttp import web
from bot_support import imagine_job, load_demo_engine, machine, median, migrated_registry, record, set_threads

from bot.config import Settings
from bot.dispatch.local import LocalDispatcher
from bot.dispatch.redis_streams import RedisDispatcher
from bot.frontend.app import BotResources, StylecodesBot
from bot.jobs import JobDone
from bot.protocol.limits import DispatchLimits
from bot.protocol.streams import RedisKeys
from bot.worker.models import ModelCache
from bot.worker.redis_worker import RedisWorker
from tests.bot.frontend.payloads import Payloads
from tests.bot.frontend.standin import StandIn

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


class ListingStandIn(StandIn):
    """The stand-in, whose `/_calls` also says what each call carried: its content and its files
    (name, size, and the pixel size of a PNG), so the benchmark can check what the bot uploaded."""

    async def _list_calls(self, request: web.Request) -> web.Response:
        def described(file) -> dict:
            width = height = None
            if file.data[:8] == PNG_SIGNATURE:
                width, height = struct.unpack(">II", file.data[16:24])  # the IHDR chunk
            return {"filename": file.filename, "size": len(file.data), "width": width, "height": height}

        calls = [
            {
                "kind": c.kind,
                "token": c.token,
                "at": c.at,
                "type": c.payload.get("type"),
                "content": c.content,
                "files": [described(f) for f in c.files],
            }
            for c in self.calls
        ]
        return web.json_response(calls)


def serve_standin(ports: multiprocessing.Queue) -> None:
    """The stand-in for Discord, in its own process: Discord's servers do not share the bot's CPU."""

    async def serve() -> None:
        standin = ListingStandIn()
        await standin.start()
        ports.put(standin.port)
        await asyncio.Event().wait()

    asyncio.run(serve())


async def timed_job(dispatcher, session_factory, job) -> float:
    started = time.perf_counter()
    await record(session_factory, job)
    result = await (await dispatcher.submit(job)).result()
    elapsed = time.perf_counter() - started
    assert isinstance(result, JobDone), result
    return elapsed


async def timed_bot(bot: StylecodesBot, payload: dict, http: aiohttp.ClientSession, base: str) -> tuple[float, list]:
    """(seconds from the interaction received to the stand-in receiving the image, the edits in between)."""
    token = payload["token"]
    started = time.monotonic()
    bot._connection.parse_interaction_create(payload)
    deadline = started + 60
    while not bot._background:  # the command handler spawns the job's follower once the job is queued
        if time.monotonic() > deadline:
            raise TimeoutError("the bot queued no job for the /imagine within 60 s (see the log)")
        await asyncio.sleep(0.005)
    await bot.wait_idle()  # the follower ends after the final edit has been answered
    async with http.get(f"{base}/_calls") as reply:
        calls = [c for c in await reply.json() if c["token"] == token]
    edits = [c for c in calls if c["kind"] == "edit_original"]
    final = [c for c in edits if c["files"]]
    kinds = [c["kind"] for c in calls]
    assert kinds[0] == "callback" and calls[0]["type"] == 5, f"/imagine was not deferred first: {kinds}"
    assert len(final) == 1 and final[0] is edits[-1], f"expected one final edit with the image, got {calls}"
    assert set(kinds) <= {"callback", "edit_original"}, f"unexpected calls: {kinds}"
    return final[0]["at"] - started, edits


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

    # The bot: its own stand-in process, the embedded dispatcher above, the production progress interval.
    ports: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=serve_standin, args=(ports,), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=60)}"
    discord.http.Route.BASE = f"{base}/api/v10"
    settings = Settings(_env_file=None, model_version=0, image_size=args.size)
    http = aiohttp.ClientSession()
    bot = StylecodesBot(BotResources(settings, session_factory, local, http))
    await bot.login("bench-token")
    await bot.wait_idle()  # the start-up recovery of unfinished jobs (none)
    payloads = Payloads(bot.tree, StandIn())  # builds payloads only; the server runs in the other process

    def job(index: int):
        return imagine_job(7, index, size=args.size, steps=args.steps)

    def interaction(index: int) -> dict:
        r = job(index).requests[0]
        options = dict(prompt=r.prompt, code=r.style.canonical, seed=r.seed, steps=r.steps)
        return payloads.command("imagine", **options, strength=r.code_style.strength, guidance=r.guidance_scale)

    for index in range(3):  # warm-up: model, SQLite file, connections
        engine.generate(job(index).requests)
        await timed_job(local, session_factory, job(index))
        if redis_bot is not None:
            await timed_job(redis_bot, session_factory, job(index))
        await timed_bot(bot, interaction(index), http, base)

    direct, local_times, redis_times, bot_times, bot_edits = [], [], [], [], []
    for index in range(args.rounds):
        started = time.perf_counter()
        engine.generate(job(index).requests)
        direct.append(time.perf_counter() - started)
        local_times.append(await timed_job(local, session_factory, job(index)))
        if redis_bot is not None:
            redis_times.append(await timed_job(redis_bot, session_factory, job(index)))
        elapsed, edits = await timed_bot(bot, interaction(index), http, base)
        bot_times.append(elapsed)
        bot_edits.append(edits)

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"demo model, 1 image of {args.size} px, {args.steps} steps, {args.rounds} rounds (medians)")
    print(f"direct engine call:  {median(direct) * 1000:8.1f} ms")
    rows = [("local", local_times)] + ([("redis", redis_times)] if redis_times else []) + [("bot", bot_times)]
    for name, times in rows:
        differences = sorted((t - d) * 1000 for t, d in zip(times, direct, strict=True))
        overhead, p90 = median(differences), differences[int(0.9 * (len(differences) - 1))]
        label = name + (" (front end)" if name == "bot" else " dispatch") + ":"
        print(
            f"{label:<20} {median(times) * 1000:8.1f} ms   overhead median {overhead:6.1f} ms, "
            f"p90 {p90:6.1f} ms ({median(times) / median(direct):.2f}x direct)   "
            f"target <= 50 ms: {'met' if overhead <= 50 else 'MISSED'}"
        )
    if redis_server is None:
        print("redis dispatch: skipped (no redis-server binary)")
    contents = sorted({c["content"] for edits in bot_edits for c in edits if not c["files"]})
    between = [len(edits) - 1 for edits in bot_edits]  # edits of the original response before the final one
    image = bot_edits[-1][-1]["files"][0]
    print(
        f"bot: {sum(between)} edits before the final one in {args.rounds} jobs "
        f"({max(between)} at most per job; texts: {contents}), so "
        f"{sum(n - 1 for n in between)} progress edits beyond the 'Queued' edit; "
        f"final edit uploads {image['filename']} ({image['width']}x{image['height']}, {image['size']} bytes)"
    )

    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    await bot.close()
    await http.close()
    server.terminate()
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
