"""The public gallery under load, over loopback: page latency, then requests per second.

    python bench/web_bench.py --url postgresql+asyncpg://postgres@127.0.0.1:55432/bench

Starts `python -m web` (its own process, one uvicorn worker) on the seeded registry (bench/registry_seed.py)
and talks to it over 127.0.0.1 only:
1. latency: one request at a time, `--requests` each of the home page, style pages (a different public
   style each time), search pages and API style details; p50/p95 in ms;
2. load: `--connections` concurrent clients for at most `--seconds` seconds and `--max-requests` requests
   (bounded: it stops by itself), a mix of 20 % home, 50 % style pages, 20 % API details, 10 % search;
   requests per second, p50/p95, and the server process's CPU seconds per request.
The load generator runs in this process on the same 2 cores as the server, as a real deployment's
reverse proxy would. ETags are not sent back, so every answer is rendered in full.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import registry
from registry.models import Style

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEARCHES = ["watercolor", "noir", "neon glow", "cozy landscape", "gothic", "pixel", "cinematic portrait", "ink"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def public_names(url: str, count: int) -> list[str]:
    engine = registry.create_engine(url)
    try:
        async with registry.create_session_factory(engine)() as session:
            top = await session.scalar(select(Style.id).order_by(Style.id.desc()).limit(1))
            ids = random.Random(7).sample(range(1, top + 1), count * 2)
            names = await session.scalars(
                select(Style.name).where(Style.id.in_(ids), Style.visibility == "public", Style.deleted_at.is_(None))
            )
            return list(names)[:count]
    finally:
        await engine.dispose()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def wait_ready(base: str, process: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if process.poll() is not None:
                sys.exit(f"python -m web exited with {process.returncode}")
            try:
                async with http.get(base + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    sys.exit("python -m web did not answer within 60 s")


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    async with http.get(url) as response:
        await response.read()
        return (time.perf_counter() - start) * 1000, response.status


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def latency(base: str, names: list[str], requests: int) -> None:
    paths = {
        "home `/`": lambda i: "/",
        "style page `/styles/<name>`": lambda i: f"/styles/{names[i % len(names)]}",
        "search `/search?q=`": lambda i: f"/search?q={SEARCHES[i % len(SEARCHES)]}",
        "API `/api/styles/<name>`": lambda i: f"/api/styles/{names[(i + 7) % len(names)]}",
        "API `/api/styles?sort=popular`": lambda i: "/api/styles?sort=popular",
    }
    print("\n| page (one request at a time) | p50 ms | p95 ms | statuses |")
    print("| --- | --- | --- | --- |")
    async with aiohttp.ClientSession() as http:
        for label, path in paths.items():
            for i in range(5):  # warm-up
                await fetch(http, base + path(i + 1000))
            times, statuses = [], set()
            for i in range(requests):
                elapsed, status = await fetch(http, base + path(i))
                times.append(elapsed)
                statuses.add(status)
            print(f"| {label} | {p(times, 50):.1f} | {p(times, 95):.1f} | {sorted(statuses)} |", flush=True)


async def load(base: str, names: list[str], connections: int, seconds: float, max_requests: int, pid: int) -> None:
    rng = random.Random(11)

    def pick() -> str:
        roll = rng.random()
        if roll < 0.2:
            return "/"
        if roll < 0.7:
            return f"/styles/{rng.choice(names)}"
        if roll < 0.9:
            return f"/api/styles/{rng.choice(names)}"
        return f"/search?q={rng.choice(SEARCHES)}"

    times: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    issued = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal issued
        while time.monotonic() < deadline and issued < max_requests:
            issued += 1
            elapsed, status = await fetch(http, base + pick())
            times.append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=connections)
    cpu_start, start = cpu_seconds(pid), time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(connections)))
    wall = time.perf_counter() - start
    server_cpu = cpu_seconds(pid) - cpu_start
    print(
        f"\nload: {len(times)} requests from {connections} connections in {wall:.1f} s = "
        f"{len(times) / wall:.0f} requests/s; p50 {p(times, 50):.1f} ms, p95 {p(times, 95):.1f} ms; "
        f"statuses {dict(sorted(statuses.items()))}; server CPU {server_cpu * 1000 / len(times):.2f} ms/request "
        f"({server_cpu / wall:.2f} cores)"
    )


async def bench(args: argparse.Namespace, process: subprocess.Popen, base: str) -> None:
    names = await public_names(args.url, 500)
    await wait_ready(base, process)
    print(f"# {args.url.split('://')[0]}, {len(names)} public styles sampled")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    await latency(base, names, args.requests)
    await load(base, names, args.connections, args.seconds, args.max_requests, process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per page kind")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    args = parser.parse_args()
    print(f"python {platform.python_version()}")
    port = free_port()
    env = {**os.environ, "STYLECODES_DATABASE_URL": args.url, "STYLECODES_WEB_RATE_LIMIT": "100000000/minute"}
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "--host", "127.0.0.1", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(bench(args, process, f"http://127.0.0.1:{port}"))
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    main()
