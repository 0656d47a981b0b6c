"""Browse sorts with keyset cursors, filters, search, autocomplete and similar styles."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import uuid

import numpy as np
import pytest
from sqlalchemy import event, insert, select, update

import registry
from registry import InvalidCursorError, InvalidSortError, LimitExceededError
from registry.models import Revision, Style, Usage, User
from registry.trending import HALF_LIFE_DAYS, decayed_uses
from stylecodes.codec import StyleCode, random_code

browse_module = sys.modules["registry.browse"]  # `registry.browse` is the function
similar_module = sys.modules["registry.latent_index"]  # the embedded (SQLite) index

ALICE, BOB, CAROL = 1001, 1002, 1003
GUILD, OTHER_GUILD = 501, 502


async def seed(session, count: int = 12) -> list[str]:
    """`count` public styles s00.. with use/favourite counts that make every sort distinct."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        name = f"style-{i:02d}"
        await registry.create_style(
            session,
            name=name,
            code=random_code(1, rng),
            owner_id=ALICE if i % 2 else BOB,
            guild_id=GUILD,
            tags=["even" if i % 2 == 0 else "odd", "all"],
            description=f"number {i}",
        )
        names.append(name)
    return names


async def walk(session, **kwargs) -> list[str]:
    """Every page of a listing, following cursors, with a small page size."""
    names, cursor = [], None
    while True:
        page = await registry.browse(session, user_id=CAROL, guild_id=GUILD, cursor=cursor, limit=5, **kwargs)
        names += [s.name for s in page.items]
        if page.next_cursor is None:
            return names
        cursor = page.next_cursor


async def test_new_pages_through_everything_once(session) -> None:
    names = await seed(session)
    assert await walk(session, sort="new") == names[::-1]


async def test_popular_and_favourites_use_the_counters(session) -> None:
    names = await seed(session)
    # Ties (equal counts) are broken by id, so paging is stable across equal keys.
    uses = {name: (i * 7) % 5 for i, name in enumerate(names)}
    for name, value in uses.items():
        await session.execute(
            update(Style).where(Style.name == name).values(use_count=value, favourite_count=value * 2)
        )
    await session.commit()
    expected = [n for n, _ in sorted(uses.items(), key=lambda item: (-item[1], -names.index(item[0])))]
    assert await walk(session, sort="popular") == expected
    assert await walk(session, sort="favourites") == expected


async def use(session, name: str, times: int, *, ago: dt.timedelta = dt.timedelta(0)) -> None:
    """`times` finished generations with `name`, queued `ago` (a use counts at its queue time)."""
    revision = await registry.resolve_reference(session, name, user_id=CAROL, guild_id=GUILD)
    for _ in range(times):
        usage = await registry.record_usage(
            session,
            job_id=uuid.uuid4().hex,
            user_id=CAROL,
            guild_id=GUILD,
            channel_id=1,
            revision_id=revision.id,
            prompt="p",
            seed=1,
            steps=2,
            guidance_scale=3.0,
            strength=0.9,
            width=64,
            height=64,
            model_version=1,
        )
        if ago:
            queued_at = registry.models.utcnow() - ago
            await session.execute(update(Usage).where(Usage.id == usage.id).values(queued_at=queued_at))
            await session.commit()
        await registry.set_usage_status(session, usage.job_id, "done")


async def test_trending_counts_recent_finished_uses(session) -> None:
    await seed(session, 4)
    for name, uses in (("style-01", 3), ("style-02", 1), ("style-03", 2)):
        await use(session, name, uses)
    # style-00 was never used: not trending at all.
    assert await walk(session, sort="trending") == ["style-01", "style-03", "style-02"]
    assert await walk(session, sort="popular") == ["style-01", "style-03", "style-02", "style-00"]


async def test_trending_decays_and_keeps_a_seven_day_window(session) -> None:
    await seed(session, 4)
    plan = {  # name: (uses, how long ago)
        "style-00": (50, dt.timedelta(days=8)),  # the most used ever, but outside the 7-day window
        "style-01": (1, dt.timedelta(hours=1)),
        "style-02": (3, dt.timedelta(days=3)),
        "style-03": (2, dt.timedelta(hours=12)),
    }
    for name, (uses, ago) in plan.items():
        await use(session, name, uses, ago=ago)
    # The documented decay: each use weighs 2^-(age / half-life).
    weight = {name: uses * 2 ** -(ago / dt.timedelta(days=HALF_LIFE_DAYS)) for name, (uses, ago) in plan.items()}
    assert weight["style-01"] > weight["style-02"]  # 1 use an hour ago beats 3 uses three days ago
    expected = sorted((name for name in plan if plan[name][1] < dt.timedelta(days=7)), key=weight.get, reverse=True)
    assert expected == ["style-03", "style-01", "style-02"]
    assert await walk(session, sort="trending") == expected
    assert await walk(session, sort="popular") == ["style-00", "style-02", "style-03", "style-01"]
    now = registry.models.utcnow()
    for style in (await registry.browse(session, user_id=CAROL, guild_id=GUILD, sort="trending")).items:
        assert decayed_uses(style.trending_score, now) == pytest.approx(weight[style.name], rel=1e-3)


async def test_filters(session) -> None:
    names = await seed(session)
    await registry.add_revision(session, "style-03", code=random_code(0), user_id=ALICE)
    assert await walk(session, tag="odd") == [n for i, n in enumerate(names) if i % 2][::-1]
    assert await walk(session, tag="ODD") == [n for i, n in enumerate(names) if i % 2][::-1]
    assert await walk(session, author_id=BOB, sort="popular") == sorted(names[::2], reverse=True)
    assert await walk(session, version=0) == ["style-03"]
    assert await walk(session, tag="nothing-here") == []


async def test_lists_respect_visibility_and_moderation(session) -> None:
    await seed(session, 3)
    await registry.create_style(
        session, name="mine-only", code=random_code(1), owner_id=BOB, guild_id=GUILD, visibility="private"
    )
    await registry.create_style(
        session, name="guild-only", code=random_code(1), owner_id=BOB, guild_id=OTHER_GUILD, visibility="guild"
    )
    await registry.delete_style(session, "style-00", user_id=BOB)
    await registry.hide_in_guild(session, "style-01", guild_id=GUILD, moderator_id=CAROL)
    assert await walk(session) == ["style-02"]  # Carol in GUILD
    page = await registry.browse(session, user_id=BOB, guild_id=OTHER_GUILD)
    assert [s.name for s in page.items] == ["guild-only", "mine-only", "style-02", "style-01"]
    assert await registry.autocomplete_names(session, "", user_id=CAROL, guild_id=GUILD) == ["style-02"]
    assert [s.name for s in await registry.search(session, "number", user_id=CAROL, guild_id=GUILD)] == ["style-02"]


async def test_bad_browse_input(session) -> None:
    await seed(session, 3)
    for sort in ("hot", None, 3):
        with pytest.raises(InvalidSortError, match="is not a sort; use one of new, popular, trending, favourites"):
            await registry.browse(session, user_id=CAROL, guild_id=None, sort=sort)
    with pytest.raises(InvalidSortError) as caught:
        await registry.browse(session, user_id=CAROL, guild_id=None, sort="hot")
    assert not isinstance(caught.value, InvalidCursorError)  # a bad sort is not a bad cursor
    for filters in ({"version": "1"}, {"version": 10}, {"version": True}, {"author_id": "alice"}):
        with pytest.raises(registry.InvalidFilterError):
            await registry.browse(session, user_id=CAROL, guild_id=None, **filters)
    with pytest.raises(InvalidCursorError, match="damaged"):
        await registry.browse(session, user_id=CAROL, guild_id=None, cursor="!!!not-base64")
    page = await registry.browse(session, user_id=CAROL, guild_id=None, limit=1)
    with pytest.raises(InvalidCursorError, match="another listing"):
        await registry.browse(session, user_id=CAROL, guild_id=None, sort="popular", cursor=page.next_cursor)
    for limit in (0, 101, -5, True, "10"):
        with pytest.raises(LimitExceededError):
            await registry.browse(session, user_id=CAROL, guild_id=None, limit=limit)


def hand_made(raw) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HAND_MADE_CURSORS = [
    ("popular", hand_made(["popular", None, 1])),  # a count sort needs a count
    ("popular", hand_made(["popular", True, 1])),
    ("popular", hand_made(["popular", 1.5, 1])),
    ("popular", hand_made(["popular", -1, 1])),
    ("popular", hand_made(["popular", 10**30, 1])),
    ("favourites", hand_made(["favourites", 2**31, 1])),
    ("new", hand_made(["new", None, True])),  # ids are whole numbers, not booleans
    ("new", hand_made(["new", None, 10**30])),
    ("new", hand_made(["new", None, 2**31])),
    ("new", hand_made(["new", None, 0])),
    ("new", hand_made(["new", None, "7"])),
    ("new", hand_made(["new", 5, 7])),  # `new` has no key
    ("trending", hand_made('["trending", NaN, 1]')),  # JSON as Python reads it
    ("trending", hand_made('["trending", Infinity, 1]')),
    ("trending", hand_made(["trending", None, 1])),
    ("trending", hand_made(["trending", 10**400, 1])),
    ("trending", hand_made(["trending", "1", 1])),
    ("new", hand_made(["new", None])),
    ("new", hand_made({"new": 1, "a": 2, "b": 3})),
    ("new", hand_made("abc")),
    ("new", hand_made(["hot", None, 1])),
    ("new", hand_made(["new", None, 1]) * 20),  # over-long
    ("new", 12345),
]


async def test_hand_made_cursors_are_refused(session) -> None:
    names = await seed(session, 3)
    for sort, cursor in HAND_MADE_CURSORS:
        with pytest.raises(InvalidCursorError, match="damaged"):
            await registry.browse(session, user_id=CAROL, guild_id=None, sort=sort, cursor=cursor)
    # The checks refuse only what no listing makes: edge values that a real page could hold still work.
    for sort, cursor in (
        ("new", hand_made(["new", None, 2**31 - 1])),
        ("popular", hand_made(["popular", 2**31 - 1, 1])),
        ("trending", hand_made(["trending", 9, 2])),
    ):
        page = await registry.browse(session, user_id=CAROL, guild_id=None, sort=sort, cursor=cursor)
        assert [s.name for s in page.items] == ([] if sort == "trending" else names[::-1])  # none was used


async def test_search(session) -> None:
    await registry.create_style(
        session,
        name="ink-wash",
        code=random_code(1),
        owner_id=ALICE,
        guild_id=None,
        description="Loose brush on rice paper",
        tags=["sumi-e", "monochrome"],
    )
    await registry.create_style(
        session,
        name="neon-noir",
        code=random_code(1),
        owner_id=ALICE,
        guild_id=None,
        description="Rainy city at night, neon signs",
        tags=["city"],
    )
    await registry.create_style(
        session, name="citrus", code=random_code(1), owner_id=ALICE, guild_id=None, description="bright summer fruit"
    )

    async def names(query):
        return [s.name for s in await registry.search(session, query, user_id=BOB, guild_id=None)]

    assert await names("brush") == ["ink-wash"]  # description
    assert await names("monochrome") == ["ink-wash"]  # tag
    assert await names("noir") == ["neon-noir"]  # part of a name
    assert set(await names("cit")) == {"neon-noir", "citrus"}  # word prefixes
    assert await names("RAINY   night") == ["neon-noir"]  # every word must match, any case
    assert await names('"rice" *)(: NEAR/2 ^') == []  # FTS syntax is not interpreted: `near` matches nothing
    assert await names('"rice" *)(: ^') == ["ink-wash"]  # punctuation only separates words
    assert await names("") == [] and await names("!!!") == []
    # The index follows edits (triggers / expression index), not just inserts.
    await registry.edit_style(session, "citrus", user_id=ALICE, description="sour lemons")
    assert await names("summer") == [] and await names("lemons") == ["citrus"]


async def test_autocomplete(session) -> None:
    for name in ("moon", "moon-dust", "moonlight", "mood", "mob", "sun"):
        await registry.create_style(session, name=name, code=random_code(1), owner_id=ALICE, guild_id=None)
    await registry.create_style(
        session, name="moon-secret", code=random_code(1), owner_id=CAROL, guild_id=None, visibility="private"
    )
    complete = registry.autocomplete_names
    assert await complete(session, "moo", user_id=BOB, guild_id=None) == ["mood", "moon", "moon-dust", "moonlight"]
    assert await complete(session, "MOON-", user_id=BOB, guild_id=None) == ["moon-dust"]
    assert await complete(session, "moon-", user_id=CAROL, guild_id=None) == ["moon-dust", "moon-secret"]
    assert await complete(session, "moon@2", user_id=BOB, guild_id=None) == ["moon", "moon-dust", "moonlight"]
    assert await complete(session, "mo", user_id=BOB, guild_id=None, limit=2) == ["mob", "mood"]
    assert await complete(session, "m%", user_id=BOB, guild_id=None) == []  # junk while typing: no error
    assert len(await complete(session, "", user_id=BOB, guild_id=None)) == 6
    with pytest.raises(LimitExceededError):
        await complete(session, "m", user_id=BOB, guild_id=None, limit=26)


async def test_similar_is_exact_and_same_version(session) -> None:
    rng = np.random.default_rng(3)
    codes = {}
    for i in range(40):
        code = random_code(1, rng)
        codes[f"v1-{i:02d}"] = code
        await registry.create_style(session, name=f"v1-{i:02d}", code=code, owner_id=ALICE, guild_id=None)
    await registry.create_style(session, name="v0-style", code=random_code(0, rng), owner_id=ALICE, guild_id=None)
    query = random_code(1, rng)

    def brute_force(pool: dict[str, StyleCode]) -> list[str]:
        distance = {n: sum((a - b) ** 2 for a, b in zip(c.levels, query.levels, strict=True)) for n, c in pool.items()}
        return sorted(pool, key=lambda n: (distance[n], n))[:5]

    found = await registry.similar_styles(session, query, user_id=BOB, guild_id=None, k=5)
    assert [s.style.name for s in found] == brute_force(codes)
    assert all(s.code == codes[s.style.name].canonical for s in found)
    expected = np.linalg.norm(codes[found[0].style.name].latent() - query.latent())
    assert found[0].distance == pytest.approx(expected, rel=1e-5)
    # A new head revision moves the style; hidden/private styles drop out, and the next nearest fill in.
    nearest = found[0].style.name
    await registry.add_revision(session, nearest, code=query, user_id=ALICE)
    codes[nearest] = query
    again = await registry.similar_styles(session, query.canonical, user_id=BOB, guild_id=None, k=5)
    assert again[0].style.name == nearest and again[0].distance == 0.0
    await registry.edit_style(session, nearest, user_id=ALICE, visibility="private")
    del codes[nearest]
    hidden = await registry.similar_styles(session, query, user_id=BOB, guild_id=None, k=5)
    assert [s.style.name for s in hidden] == brute_force(codes)
    # Only same-version styles are ever returned.
    v0 = await registry.similar_styles(session, random_code(0, rng), user_id=BOB, guild_id=None, k=5)
    assert [s.style.name for s in v0] == ["v0-style"]
    with pytest.raises(registry.InvalidCodeError):
        await registry.similar_styles(session, "junk", user_id=BOB, guild_id=None)


async def test_search_puts_whole_words_before_prefixes(session) -> None:
    for name, description in (("inkwell-art", "an inkwell"), ("blue-ink", "ink on paper"), ("pinky", "pink ink")):
        await registry.create_style(session, name=name, code=random_code(1), owner_id=ALICE, guild_id=None,
                                    description=description)  # fmt: skip
    found = [s.name for s in await registry.search(session, "ink", user_id=BOB, guild_id=None)]
    assert set(found[:2]) == {"blue-ink", "pinky"} and found[2:] == ["inkwell-art"]
    assert len(await registry.search(session, "ink", user_id=BOB, guild_id=None, limit=2)) == 2


async def test_search_applies_visibility_before_the_candidate_limit(session, monkeypatch) -> None:
    monkeypatch.setattr(browse_module, "SEARCH_CANDIDATES", 2)

    async def lantern(name, **kwargs):
        kwargs.setdefault("guild_id", GUILD)
        await registry.create_style(
            session, name=name, code=random_code(1), owner_id=BOB, description="a paper lantern", **kwargs
        )

    await lantern("visible-old")
    # Newer matches, more of them than candidates, none of them visible to Carol in GUILD.
    await lantern("bobs-private", visibility="private")
    await lantern("other-server", visibility="guild", guild_id=OTHER_GUILD)
    await lantern("deleted-one")
    await registry.delete_style(session, "deleted-one", user_id=BOB)
    await lantern("hidden-here")
    await registry.hide_in_guild(session, "hidden-here", guild_id=GUILD, moderator_id=CAROL)
    for query in ("lantern", "lant", "paper lantern"):  # whole words, and the last word as a prefix
        found = await registry.search(session, query, user_id=CAROL, guild_id=GUILD)
        assert [s.name for s in found] == ["visible-old"], query
    # Bob, in the other server, sees his own newer ones first: still only visible ones, newest two.
    found = await registry.search(session, "lantern", user_id=BOB, guild_id=OTHER_GUILD)
    assert {s.name for s in found} == {"hidden-here", "other-server"}


async def test_search_query_must_be_text(session) -> None:
    for query in (None, 5, ["ink"], b"ink"):
        with pytest.raises(registry.InvalidTextError, match="A search query must be text"):
            await registry.search(session, query, user_id=BOB, guild_id=None)


def brute_force(pool: dict[str, StyleCode], query: StyleCode, k: int) -> list[str]:
    distance = {n: sum((a - b) ** 2 for a, b in zip(c.levels, query.levels, strict=True)) for n, c in pool.items()}
    return sorted(pool, key=lambda n: (distance[n], n))[:k]


@pytest.mark.backends("sqlite")  # the embedded index; PostgreSQL searches with pgvector
async def test_similar_index_warms_in_chunks_off_the_event_loop(session, monkeypatch) -> None:
    # Tiny chunks and thresholds, so a small registry goes through every loading path: several chunks,
    # a worker thread, heads superseded in a later chunk, compaction.
    monkeypatch.setattr(similar_module, "_LOAD_CHUNK", 4)
    monkeypatch.setattr(similar_module, "_INLINE_ROWS", 3)
    monkeypatch.setattr(similar_module, "_COMPACT_MIN", 1)
    threaded = []
    real_to_thread = similar_module.asyncio.to_thread

    async def to_thread(function, *args):
        threaded.append(len(args[0]))
        return await real_to_thread(function, *args)

    monkeypatch.setattr(similar_module.asyncio, "to_thread", to_thread)
    rng = np.random.default_rng(11)
    heads = {}
    for i in range(12):
        heads[f"sim-{i:02d}"] = random_code(1, rng)
        await registry.create_style(session, name=f"sim-{i:02d}", code=heads[f"sim-{i:02d}"], owner_id=ALICE,
                                    guild_id=None)  # fmt: skip
    for i in (0, 3, 3, 7):  # later revisions: the first head of these styles dies in an earlier chunk
        heads[f"sim-{i:02d}"] = random_code(1, rng)
        await registry.add_revision(session, f"sim-{i:02d}", code=heads[f"sim-{i:02d}"], user_id=ALICE)
    await registry.create_style(session, name="sim-v0", code=random_code(0, rng), owner_id=ALICE, guild_id=None)

    assert await registry.warm_similar_index(session) == 13
    assert threaded and max(threaded) == 4  # chunks of 4 rows, folded in by a worker thread
    assert await registry.warm_similar_index(session) == 13  # up to date: nothing read again
    index = similar_module.latent_index(session)
    assert all(matrix.size == matrix.alive for matrix in index.matrices.values())  # compacted
    for _ in range(3):
        query = random_code(1, rng)
        found = await registry.similar_styles(session, query, user_id=BOB, guild_id=None, k=5)
        assert [s.style.name for s in found] == brute_force(heads, query, 5)
        assert all(s.code == heads[s.style.name].canonical for s in found)
    # A new revision after warming is folded in on the next query, on the loop (a handful of rows).
    monkeypatch.setattr(similar_module, "_LOAD_CHUNK", 50_000)
    monkeypatch.setattr(similar_module, "_INLINE_ROWS", 1_000)
    threaded.clear()
    query = random_code(1, rng)
    await registry.add_revision(session, "sim-05", code=query, user_id=ALICE)
    heads["sim-05"] = query
    found = await registry.similar_styles(session, query, user_id=BOB, guild_id=None, k=25)
    assert [s.style.name for s in found] == brute_force(heads, query, 25) and threaded == []
    assert (found[0].style.name, found[0].distance) == ("sim-05", 0.0)


@pytest.mark.backends("sqlite")
async def test_similar_looks_visibility_up_in_bounded_chunks(session, engine, monkeypatch) -> None:
    monkeypatch.setattr(similar_module, "_LOOKUP_CHUNK", 3)
    rng = np.random.default_rng(12)
    visible = {}
    for i in range(20):
        code = random_code(1, rng)
        private = i % 5 != 0  # most candidates are invisible to Carol: several widening rounds
        await registry.create_style(session, name=f"pool-{i:02d}", code=code, owner_id=BOB, guild_id=None,
                                    visibility="private" if private else "public")  # fmt: skip
        if not private:
            visible[f"pool-{i:02d}"] = code
    lookups = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT styles.id"):
            lookups.append(len(parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        query = random_code(1, rng)
        found = await registry.similar_styles(session, query, user_id=CAROL, guild_id=None, k=4)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert [s.style.name for s in found] == brute_force(visible, query, 4)
    assert len(lookups) > 3 and max(lookups) <= 3 + 2  # 3 ids, plus the visibility condition's parameters


async def test_similar_past_the_bind_parameter_limit(session) -> None:
    # 33,000 nearer styles the asker cannot see: the candidate set widens past the 32,767 bind
    # parameters asyncpg allows in one statement (SQLite: 32,766).
    rng = np.random.default_rng(13)
    query = random_code(1, rng)
    near = np.clip(np.asarray(query.levels) + rng.integers(-2, 3, (33_000, 20)), 0, 63).astype(np.uint8)
    far = StyleCode(tuple(63 - level for level in query.levels), 1)
    now = registry.models.utcnow()
    await session.execute(insert(User), [{"id": BOB, "created_at": now, "updated_at": now}])
    styles, revisions = [], []
    for i, levels in enumerate([*near, np.asarray(far.levels, dtype=np.uint8)], start=1):
        public = i == len(near) + 1
        styles.append({"id": i, "name": f"crowd-{i}", "owner_id": BOB, "visibility": "public" if public else "private",
                       "version": 1, "head_number": 1, "created_at": now, "updated_at": now})  # fmt: skip
        code = StyleCode(tuple(int(v) for v in levels), 1).canonical
        revisions.append({"id": i, "style_id": i, "number": 1, "code": code, "version": 1,
                          "levels": levels.tobytes(), "author_id": BOB, "created_at": now})  # fmt: skip
    await session.execute(insert(Style.__table__), styles)  # Core executemany: seconds faster than the ORM
    await session.execute(insert(Revision.__table__), revisions)
    await session.commit()
    found = await registry.similar_styles(session, query, user_id=CAROL, guild_id=None, k=1)
    assert [(s.style.name, s.code) for s in found] == [(f"crowd-{len(near) + 1}", far.canonical)]
    assert await session.scalar(select(Style.name).where(Style.id == 1)) == "crowd-1"
