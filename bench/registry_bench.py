"""Registry latency and throughput on a seeded database (see bench/registry_seed.py).

    python bench/registry_bench.py --url sqlite+aiosqlite:////tmp/registry-bench/registry.db
    python bench/registry_bench.py --url postgresql+asyncpg://postgres@127.0.0.1:5433/bench

Each operation runs through the public repository functions, one session per call (as the bot does),
after a short warm-up; the table gives p50/p95 in milliseconds and p95 as a ratio of the issue's
target (below 1.0 = target met). Usage recording is measured as sequential calls and with 8
concurrent tasks. The script writes usage rows, so run it on a copy if you need the seed unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import registry
from registry.models import Style
from stylecodes.codec import random_code

TARGET_MS = {"resolve": 5.0, "autocomplete": 5.0, "browse": 25.0, "search": 25.0, "similar": 50.0}
USAGE_TARGET_PER_S = 2000.0
SEARCH_WORDS = ["watercolor", "noir", "neon glow", "cozy landscape", "gothic", "pixel", "cinematic portrait", "ink"]


async def sample(sessions, rng: np.random.Generator, count: int) -> tuple[list[str], int, int]:
    async with sessions() as session:
        top = await session.scalar(select(func.max(Style.id)))
        ids = [int(i) for i in rng.integers(1, top + 1, count * 2)]
        names = list(
            await session.scalars(
                select(Style.name).where(Style.id.in_(ids), Style.visibility == "public", Style.deleted_at.is_(None))
            )
        )
        user_id, guild_id = (await session.execute(select(Style.owner_id, Style.guild_id).limit(1))).one()
    return names[:count], user_id, guild_id


async def timed(
    sessions, call: Callable[..., Awaitable], iterations: int, warmup: int = 10
) -> tuple[list[float], float]:
    """Wall-clock ms per call, and the mean CPU ms per call of this process (all its threads)."""
    times = []
    for i in range(warmup + iterations):
        if i == warmup:
            cpu_start = time.process_time()
        start = time.perf_counter()
        async with sessions() as session:
            await call(session, i)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times, (time.process_time() - cpu_start) * 1000 / iterations


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def bench(url: str, iterations: int, usage_calls: int) -> None:
    engine = registry.create_engine(url, pool_size=10) if "postgresql" in url else registry.create_engine(url)
    sessions = registry.create_session_factory(engine)
    rng = np.random.default_rng(7)
    names, user_id, guild_id = await sample(sessions, rng, max(iterations + 20, 200))
    async with sessions() as session:
        n_styles = await session.scalar(select(func.count()).select_from(Style))
        n_usages = await session.scalar(select(func.count()).select_from(registry.Usage))
    print(f"# {url.split('://')[0]}: {n_styles:,} styles, {n_usages:,} usages")
    me = dict(user_id=user_id, guild_id=guild_id)

    def pick(i: int) -> str:
        return names[i % len(names)]

    cursors: dict[str, str] = {}

    async def second_page(session, sort: str) -> None:
        if sort not in cursors:
            first = await registry.browse(session, sort=sort, **me)
            cursors[sort] = first.next_cursor
        await registry.browse(session, sort=sort, cursor=cursors[sort], **me)

    codes = [random_code(1, rng) for _ in range(iterations + 20)]
    operations: list[tuple[str, str, Callable]] = [
        ("resolve", "resolve `name`", lambda s, i: registry.resolve_reference(s, pick(i), **me)),
        ("resolve", "resolve `name@1`", lambda s, i: registry.resolve_reference(s, f"{pick(i)}@1", **me)),
        ("resolve", "unknown name + suggestions", lambda s, i: _miss(s, pick(i)[:-1] + "x-q", me)),
        (
            "autocomplete",
            "autocomplete (1-6 chars)",
            lambda s, i: registry.autocomplete_names(s, pick(i)[: 1 + i % 6], **me),
        ),
        ("autocomplete", "autocomplete (empty)", lambda s, i: registry.autocomplete_names(s, "", **me)),
    ]
    for sort in registry.SORTS:
        operations.append(("browse", f"browse {sort}", lambda s, i, sort=sort: registry.browse(s, sort=sort, **me)))
    operations += [
        ("browse", "browse popular, page 2", lambda s, i: second_page(s, "popular")),
        ("browse", "browse trending, page 2", lambda s, i: second_page(s, "trending")),
        ("browse", "browse new, tag filter", lambda s, i: registry.browse(s, sort="new", tag="noir", **me)),
        ("browse", "browse popular, tag filter", lambda s, i: registry.browse(s, sort="popular", tag="noir", **me)),
        ("browse", "browse new, author filter", lambda s, i: registry.browse(s, sort="new", author_id=user_id, **me)),
        (
            "search",
            "search (1-2 common words)",
            lambda s, i: registry.search(s, SEARCH_WORDS[i % len(SEARCH_WORDS)], **me),
        ),
        ("search", "search (a style name)", lambda s, i: registry.search(s, pick(i).replace("-", " "), **me)),
        ("similar", "similar k=10", lambda s, i: registry.similar_styles(s, codes[i], k=10, **me)),
        ("resolve", "style history", lambda s, i: registry.style_history(s, pick(i), **me)),
    ]

    # The similar-styles index is built at start (as the bot does); report that once, separately.
    start = time.perf_counter()
    async with sessions() as session:
        indexed = await registry.warm_similar_index(session)
    build_s = time.perf_counter() - start

    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("\n| operation | p50 ms | p95 ms | client CPU ms/call | target p95 | p95 / target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, label, call in operations:
        times, cpu_ms = await timed(sessions, call, iterations)
        target = TARGET_MS[kind] if label != "style history" else None
        p50, p95 = percentile(times, 50), percentile(times, 95)
        ratio = f"{p95 / target:.2f}" if target else "-"
        target_text = f"{target:g} ms" if target else "-"
        print(f"| {label} | {p50:.2f} | {p95:.2f} | {cpu_ms:.2f} | {target_text} | {ratio} |", flush=True)
    if "postgresql" in url:
        print("\nsimilar: pgvector HNSW in the database (nothing to build in the process)")
        recall, exact_ms = await _hnsw_recall(sessions, codes[:50], me)
        print(f"similar recall@10 against an exact scan (50 queries): {recall:.3f}; exact scan p50 {exact_ms:.1f} ms")
    else:
        print(f"\nsimilar: in-memory index of {indexed:,} styles built by warm_similar_index in {build_s:.2f} s")

    revision = await _revision_id(sessions, names[0], me)
    sequential = await _usage_rate(sessions, revision, usage_calls, concurrency=1, user_id=user_id)
    concurrent = await _usage_rate(sessions, revision, usage_calls, concurrency=8, user_id=user_id)
    for label, (rate, cpu_rate) in (("sequential", sequential), ("8 concurrent tasks", concurrent)):
        print(
            f"record_usage, {label}: {rate:,.0f}/s ({rate / USAGE_TARGET_PER_S:.2f}x target); "
            f"{cpu_rate:,.0f} per client CPU-second"
        )
    done_rate = await _done_rate(sessions, user_id, usage_calls)
    print(f"set_usage_status(done) incl. counter update: {done_rate:,.0f}/s sequential")
    await engine.dispose()


async def _hnsw_recall(sessions, codes, me: dict) -> tuple[float, float]:
    """Share of the exact 10 nearest (same query without the index: `ORDER BY distance + 0`) that the
    HNSW path returns, and the exact scan's median time."""
    from sqlalchemy import Float, literal_column

    from registry.visibility import visible_to

    hits, times = 0, []
    for code in codes:
        async with sessions() as session:
            found = {s.style.id for s in await registry.similar_styles(session, code, k=10, **me)}
            query = "[" + ",".join(map(str, code.levels)) + "]"
            distance = literal_column("styles.latent").op("<->", return_type=Float)(
                literal_column(f"'{query}'::vector")
            )
            start = time.perf_counter()
            exact = await session.scalars(
                select(Style.id)
                .where(visible_to(**me), Style.version == code.version)
                .order_by(distance + 0)
                .limit(10)
            )
            exact_ids = set(exact)
            times.append((time.perf_counter() - start) * 1000)
        hits += len(found & exact_ids)
    return hits / (10 * len(codes)), percentile(times, 50)


async def _miss(session, name: str, me: dict) -> None:
    try:
        await registry.resolve_reference(session, name, **me)
    except registry.RegistryError:
        pass


async def _revision_id(sessions, name: str, me: dict) -> int:
    async with sessions() as session:
        return (await registry.resolve_reference(session, name, **me)).id


REQUEST = dict(
    prompt="a lighthouse at dusk",
    seed=1,
    steps=20,
    guidance_scale=3.0,
    strength=0.9,
    width=512,
    height=512,
    model_version=1,
)


async def _usage_rate(sessions, revision_id: int, calls: int, *, concurrency: int, user_id: int) -> tuple[float, float]:
    """Calls per wall-clock second, and per CPU-second of this process."""

    async def worker(count: int) -> None:
        for _ in range(count):
            async with sessions() as session:
                await registry.record_usage(
                    session,
                    job_id=uuid.uuid4().hex,
                    user_id=user_id,
                    guild_id=None,
                    channel_id=1,
                    revision_id=revision_id,
                    **REQUEST,
                )

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    done = calls // concurrency * concurrency
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu_start)


async def _done_rate(sessions, user_id: int, calls: int) -> float:
    async with sessions() as session:
        queued = await session.scalars(
            select(registry.Usage.job_id)
            .where(registry.Usage.status == "queued", registry.Usage.user_id == user_id)
            .limit(calls)
        )
        job_ids = list(queued)
    start = time.perf_counter()
    for job_id in job_ids:
        async with sessions() as session:
            await registry.set_usage_status(session, job_id, "done")
    return len(job_ids) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--iterations", type=int, default=300, help="timed calls per operation")
    parser.add_argument("--usage-calls", type=int, default=4000, help="record_usage calls per throughput run")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    asyncio.run(bench(args.url, args.iterations, args.usage_calls))


if __name__ == "__main__":
    main()
