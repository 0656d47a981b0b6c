"""Seed a registry database at benchmark scale: 1,000,000 styles and 5,000,000 usage rows by default.

    python bench/registry_seed.py --url sqlite+aiosqlite:////tmp/registry-bench/registry.db
    python bench/registry_seed.py --url postgresql+asyncpg://postgres@127.0.0.1:5433/bench

The database must be empty; the script migrates it to head first. Data is synthetic but shaped like
a community: names from word pairs, Zipf-distributed popularity, 90 % public styles, a fifth of the
styles with a second revision, a year of generations (5 % failed), favourites. The denormalised
counters (use_count, trending_score, last_used_at, favourite_count) are computed from the generated
rows, exactly as the repository would have maintained them.

Fast path: secondary indexes (and SQLite's FTS trigger, PostgreSQL's head-latent trigger) are dropped,
rows go in with executemany (SQLite) or COPY (PostgreSQL), then the indexes (the HNSW and trigram ones
included) are rebuilt and the tables analysed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.db import upgrade_to_head
from registry.errors import InvalidNameError
from registry.names import normalise_name
from registry.trending import use_weight
from stylecodes.codec import URLSAFE_ALPHABET

ADJECTIVES = (
    "misty amber neon velvet silent golden frozen rusty gentle wild lunar solar crimson azure pastel faded "
    "vivid dusty electric quiet stormy sunny hazy glossy matte grainy dreamy gritty soft bold ancient cosmic "
    "urban rural tidal floral smoky icy fiery mellow brisk"
).split()
NOUNS = (
    "harbor forest city desert ocean garden canyon meadow river glacier temple market alley studio attic "
    "orchard lagoon valley summit prairie tundra jungle island bridge tower castle village station museum "
    "library cinema circus carnival festival workshop factory palace cathedral lighthouse"
).split()
WORDS = (
    "watercolor oil ink pencil charcoal pastel gouache acrylic digital pixel vector lowpoly anime manga comic "
    "noir retro vintage modern baroque gothic impressionist cubist surreal abstract minimal maximal organic "
    "geometric texture grain light shadow dusk dawn night neon glow soft hard warm cold muted vibrant portrait "
    "landscape still life street fashion fantasy scifi horror cozy whimsical epic cinematic moody dreamy "
    "painterly sketchy clean messy bold subtle rich flat deep"
).split()
TAGS = (
    "watercolor oil ink anime manga comic noir retro vintage baroque gothic surreal abstract minimal portrait "
    "landscape fantasy scifi horror cozy cinematic pixel-art lowpoly sketch charcoal pastel neon photo "
    "illustration concept-art"
).split()
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def timestamps(seconds_ago: np.ndarray) -> list[dt.datetime]:
    base = NOW.timestamp()
    return [dt.datetime.fromtimestamp(base - float(s), dt.UTC) for s in seconds_ago]


def canonical_codes(levels: np.ndarray, versions: np.ndarray) -> list[str]:
    alphabet = np.frombuffer(URLSAFE_ALPHABET.encode(), dtype=np.uint8)
    symbols = alphabet[levels]  # (N, 20)
    digits = (versions.astype(np.uint8) + ord("0"))[:, None]  # (N, 1)
    return [row.tobytes().decode() for row in np.concatenate([symbols, digits], axis=1)]


def seed_name(i: int) -> str:
    name = f"{ADJECTIVES[i % len(ADJECTIVES)]}-{NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]}-{i}"
    try:
        return normalise_name(name)
    except InvalidNameError:  # 21 characters ending in 0/1 would read as a stylecode
        return normalise_name(f"{name[: -len(str(i))]}n{i}")


class Writer:
    """Bulk insert with secondary indexes dropped and rebuilt afterwards."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def drop_indexes(self) -> None: ...
    async def rebuild(self) -> None: ...
    async def write(self, table: str, columns: list[str], rows: list[tuple]) -> None: ...


class SqliteWriter(Writer):
    def __init__(self, path: str) -> None:
        self.path = path
        self.saved: list[str] = []

    async def open(self) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
            self.db.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    async def drop_indexes(self) -> None:
        rows = self.db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
            "((type = 'index' AND name NOT LIKE 'sqlite_autoindex%') OR name = 'style_fts_insert')"
        ).fetchall()
        for kind, name, sql in rows:
            self.db.execute(f"DROP {kind.upper()} {name}")
            self.saved.append(sql)

    async def rebuild(self) -> None:
        self.db.execute("INSERT INTO style_fts(style_fts) VALUES ('rebuild')")
        for sql in self.saved:
            self.db.execute(sql)
        self.db.execute("ANALYZE")

    async def write(self, table: str, columns: list[str], rows: list[tuple]) -> None:
        placeholders = ", ".join("?" for _ in columns)
        converted = [tuple(_sqlite_value(v) for v in row) for row in rows]
        self.db.execute("BEGIN")
        self.db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", converted)
        self.db.execute("COMMIT")


def _sqlite_value(value):
    if isinstance(value, dt.datetime):  # the exact text SQLAlchemy's SQLite DateTime writes and reads
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class PostgresWriter(Writer):
    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        self.saved: list[str] = []

    async def open(self) -> None:
        import asyncpg

        self.db = await asyncpg.connect(self.dsn)
        await self.db.execute("SET maintenance_work_mem = '1GB'")

    async def close(self) -> None:
        await self.db.close()

    async def drop_indexes(self) -> None:
        rows = await self.db.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
        for row in rows:
            await self.db.execute(f"DROP INDEX {row['indexname']}")
            self.saved.append(row["indexdef"])
        # The trigger that sets styles.latent per revision (migration 0004); one UPDATE does it below.
        await self.db.execute("ALTER TABLE revisions DISABLE TRIGGER USER")

    async def rebuild(self) -> None:
        await self.db.execute(
            "UPDATE styles SET latent = registry_levels_vector(r.levels) FROM revisions r "
            "WHERE r.style_id = styles.id AND r.number = styles.head_number"
        )
        await self.db.execute("ALTER TABLE revisions ENABLE TRIGGER USER")
        await self.db.execute("VACUUM styles")
        for sql in self.saved:
            await self.db.execute(sql)
        await self.db.execute("ANALYZE")
        for table, column in (("styles", "id"), ("revisions", "id"), ("usages", "id")):
            await self.db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT max({column}) FROM {table}))"
            )

    async def write(self, table: str, columns: list[str], rows: list[tuple]) -> None:
        await self.db.copy_records_to_table(table, records=rows, columns=columns)


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(total, start + size)


async def seed(url: str, n_styles: int, n_usages: int, n_users: int, n_favourites: int, chunk: int) -> None:
    rng = np.random.default_rng(2026)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    await upgrade_to_head(url)
    writer: Writer = SqliteWriter(url.split("///", 1)[1]) if url.startswith("sqlite") else PostgresWriter(url)
    await writer.open()
    await writer.drop_indexes()
    progress("migrated; secondary indexes dropped")

    # --- users ---
    await writer.write(
        "users",
        ["id", "display_name", "created_at", "updated_at"],
        [(10**15 + i, f"user{i}", NOW, NOW) for i in range(n_users)],
    )

    # --- usage plan first: the style counters are computed from it ---
    style_of_usage = np.minimum(rng.zipf(1.25, n_usages), n_styles) - 1  # popularity rank = style index
    style_of_usage = rng.permutation(n_styles)[style_of_usage]  # popular styles anywhere in id order
    named = rng.random(n_usages) < 0.8
    usage_age = np.sort(rng.random(n_usages) * 365 * 86400)[::-1]  # oldest first, ids follow time
    status_roll = rng.random(n_usages)
    status = np.where(status_roll < 0.93, "done", np.where(status_roll < 0.98, "failed", "cancelled")).astype(object)
    status[-20:] = "queued"  # a few jobs in flight, for unfinished_usages
    counted = named & (status == "done")
    use_count = np.bincount(style_of_usage[counted], minlength=n_styles)
    weights = np.array([use_weight(NOW)]) - usage_age[counted] / 86400.0
    trending = np.full(n_styles, -np.inf)
    np.logaddexp2.at(trending, style_of_usage[counted], weights)
    last_used_age = np.full(n_styles, np.inf)
    np.minimum.at(last_used_age, style_of_usage[counted], usage_age[counted])

    fav_users = rng.integers(0, n_users, n_favourites)
    fav_styles = rng.permutation(n_styles)[np.minimum(rng.zipf(1.3, n_favourites), n_styles) - 1]
    fav_pairs = np.unique(np.stack([fav_users, fav_styles], axis=1), axis=0)
    favourite_count = np.bincount(fav_pairs[:, 1], minlength=n_styles)
    progress("planned usage and favourites")

    # --- styles and revisions ---
    owners = 10**15 + rng.integers(0, n_users, n_styles)
    guilds = 10**17 + rng.integers(0, 2000, n_styles)
    visibility = rng.choice(np.array(["public", "guild", "private"], dtype=object), n_styles, p=[0.9, 0.05, 0.05])
    versions = np.where(rng.random(n_styles) < 0.95, 1, 0)
    two_revisions = rng.random(n_styles) < 0.2
    created_age = np.sort(rng.random(n_styles) * 730 * 86400)[::-1]
    revision_ids = np.cumsum(1 + two_revisions)  # revision id of each style's head (ids are 1-based)
    head_levels = rng.integers(0, 64, (n_styles, 20), dtype=np.uint8)
    first_levels = rng.integers(0, 64, (n_styles, 20), dtype=np.uint8)
    head_codes = canonical_codes(head_levels, versions)
    first_codes = canonical_codes(first_levels, versions)
    for start, stop in chunks(n_styles, chunk):
        style_rows, revision_rows, tag_rows = [], [], []
        created = timestamps(created_age[start:stop])
        for i in range(start, stop):
            when = created[i - start]
            tags = list(dict.fromkeys(rng.choice(TAGS, rng.integers(1, 4))))
            words = rng.choice(WORDS, rng.integers(6, 13))
            name = seed_name(i)
            used = use_count[i] > 0
            last_used = timestamps(last_used_age[i : i + 1])[0] if used else None
            style_rows.append(
                (
                    i + 1,
                    name,
                    int(owners[i]),
                    int(guilds[i]),
                    visibility[i],
                    " ".join(words).capitalize(),
                    " ".join(tags),
                    None,
                    2 if two_revisions[i] else 1,
                    int(versions[i]),
                    when,
                    when,
                    None,
                    int(use_count[i]),
                    int(favourite_count[i]),
                    float(trending[i]) if used else None,
                    last_used,
                )
            )
            tag_rows += [(i + 1, tag) for tag in tags]
            head_id = int(revision_ids[i])
            if two_revisions[i]:
                revision_rows.append(
                    (
                        head_id - 1,
                        i + 1,
                        1,
                        first_codes[i],
                        int(versions[i]),
                        first_levels[i].tobytes(),
                        int(owners[i]),
                        "",
                        when,
                    )
                )
            number = 2 if two_revisions[i] else 1
            revision_rows.append(
                (
                    head_id,
                    i + 1,
                    number,
                    head_codes[i],
                    int(versions[i]),
                    head_levels[i].tobytes(),
                    int(owners[i]),
                    "",
                    when,
                )
            )
        await writer.write("styles", STYLE_COLUMNS, style_rows)
        await writer.write("revisions", REVISION_COLUMNS, revision_rows)
        await writer.write("style_tags", ["style_id", "tag"], tag_rows)
        progress(f"styles {stop:,}/{n_styles:,}")

    # --- favourites ---
    for start, stop in chunks(len(fav_pairs), chunk * 4):
        rows = [(int(10**15 + u), int(s + 1), NOW) for u, s in fav_pairs[start:stop]]
        await writer.write("favourites", ["user_id", "style_id", "created_at"], rows)
    progress(f"favourites {len(fav_pairs):,}")

    # --- usages ---
    prompts = [" ".join(rng.choice(WORDS, 8)) for _ in range(1000)]
    for start, stop in chunks(n_usages, chunk * 2):
        queued = timestamps(usage_age[start:stop])
        job_ids = [f"{x:032x}" for x in rng.integers(0, 2**63 - 1, stop - start, dtype=np.int64)]
        rows = []
        for j, i in enumerate(range(start, stop)):
            style_index = int(style_of_usage[i])
            is_named = bool(named[i])
            state = status[i]
            finished = queued[j] + dt.timedelta(seconds=8) if state != "queued" else None
            rows.append(
                (
                    i + 1,
                    f"{job_ids[j][:20]}{i:012x}",
                    int(revision_ids[style_index]) if is_named else None,
                    style_index + 1 if is_named else None,
                    head_codes[style_index] if is_named else head_codes[i % n_styles],
                    int(owners[i % n_styles]),
                    int(guilds[i % n_styles]),
                    900 + i % 5000,
                    prompts[i % 1000],
                    "",
                    i,
                    20,
                    3.0,
                    0.9,
                    512,
                    512,
                    1,
                    1,
                    state,
                    queued[j],
                    queued[j] + dt.timedelta(seconds=2) if state != "queued" else None,
                    finished,
                    "GPU out of memory" if state == "failed" else None,
                    None,
                    finished,  # delivered_at: the bot posted every finished job's outcome
                )
            )
        await writer.write("usages", USAGE_COLUMNS, rows)
        progress(f"usages {stop:,}/{n_usages:,}")

    await writer.rebuild()
    progress("indexes rebuilt, analysed")
    await writer.close()
    progress("done")


STYLE_COLUMNS = [
    "id",
    "name",
    "owner_id",
    "guild_id",
    "visibility",
    "description",
    "tags",
    "parent_id",
    "head_number",
    "version",
    "created_at",
    "updated_at",
    "deleted_at",
    "use_count",
    "favourite_count",
    "trending_score",
    "last_used_at",
]
REVISION_COLUMNS = ["id", "style_id", "number", "code", "version", "levels", "author_id", "note", "created_at"]
USAGE_COLUMNS = [
    "id",
    "job_id",
    "revision_id",
    "style_id",
    "code",
    "user_id",
    "guild_id",
    "channel_id",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "strength",
    "width",
    "height",
    "model_version",
    "count",
    "status",
    "queued_at",
    "started_at",
    "finished_at",
    "error",
    "message_link",
    "delivered_at",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url", required=True, help="an empty database: sqlite+aiosqlite:///... or postgresql+asyncpg://..."
    )
    parser.add_argument("--styles", type=int, default=1_000_000)
    parser.add_argument("--usages", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--favourites", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per insert batch")
    args = parser.parse_args()
    asyncio.run(seed(args.url, args.styles, args.usages, args.users, args.favourites, args.chunk))


if __name__ == "__main__":
    main()
