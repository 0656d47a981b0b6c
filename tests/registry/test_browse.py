"""Browse sorts with keyset cursors, filters, search, autocomplete and similar styles."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import update

import registry
from registry import InvalidCursorError, LimitExceededError
from registry.models import Style
from stylecodes.codec import StyleCode, random_code

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


async def test_trending_counts_recent_finished_uses(session) -> None:
    await seed(session, 4)
    for name, uses in (("style-01", 3), ("style-02", 1), ("style-03", 2)):
        revision = await registry.resolve_reference(session, name, user_id=CAROL, guild_id=GUILD)
        for _ in range(uses):
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
            await registry.set_usage_status(session, usage.job_id, "done")
    # style-00 was never used: not trending at all.
    assert await walk(session, sort="trending") == ["style-01", "style-03", "style-02"]
    assert await walk(session, sort="popular") == ["style-01", "style-03", "style-02", "style-00"]


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
    with pytest.raises(InvalidCursorError, match="not a sort"):
        await registry.browse(session, user_id=CAROL, guild_id=None, sort="hot")
    with pytest.raises(InvalidCursorError, match="damaged"):
        await registry.browse(session, user_id=CAROL, guild_id=None, cursor="!!!not-base64")
    page = await registry.browse(session, user_id=CAROL, guild_id=None, limit=1)
    with pytest.raises(InvalidCursorError, match="another listing"):
        await registry.browse(session, user_id=CAROL, guild_id=None, sort="popular", cursor=page.next_cursor)
    for limit in (0, 101):
        with pytest.raises(LimitExceededError):
            await registry.browse(session, user_id=CAROL, guild_id=None, limit=limit)


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
