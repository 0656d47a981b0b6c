"""The public listings of /stylecode (browse, search, similar): paging, tags, bad input, and only what
anyone in the channel may see."""

from __future__ import annotations

import pytest

import registry
from stylecodes.codec import parse_code
from tests.bot.frontend.helpers import CODE, OTHER_CODE, data, reply_to, save
from tests.bot.frontend.payloads import ALICE, BOB, GUILD_ID


def names_in(call_or_embed) -> list[str]:
    if isinstance(call_or_embed, dict):
        embed = call_or_embed
    else:
        embed = (call_or_embed.embeds or data(call_or_embed)["embeds"])[0]
    return [line.split("**")[1] for line in embed["description"].splitlines() if "**" in line]


async def test_browse_pages_forward_and_back_and_opens_a_style(harness, session_factory):
    for index in range(7):  # two pages of five
        await save(session_factory, f"style-{index}", tags="city")
    _, first = await reply_to(harness, "stylecode browse", sort="new", tag="city")
    embed = data(first)["embeds"][0]
    assert embed["title"] == "Styles · new · #city" and embed["footer"]["text"] == "Page 1"
    assert [line.split("**")[1] for line in embed["description"].splitlines()] == [
        f"style-{i}" for i in (6, 5, 4, 3, 2)
    ]
    labels = [(b["label"], b.get("disabled", False)) for b in first.buttons()]
    assert labels == [("◀", True), ("▶", False)]

    forward = harness.send(harness.payloads.click(first, "▶"))
    page2 = await harness.first(forward, "callback")
    assert page2.payload["type"] == 7  # the browse message itself is updated
    embed2 = data(page2)["embeds"][0]
    assert embed2["footer"]["text"] == "Page 2" and "style-1" in embed2["description"]
    back = harness.send(harness.payloads.click(page2, "◀"))
    page1 = await harness.first(back, "callback")
    assert data(page1)["embeds"][0]["footer"]["text"] == "Page 1"

    opened = harness.send(harness.payloads.select(first, ["style-4"]))
    card = await harness.first(opened, "callback")
    assert card.ephemeral and data(card)["embeds"][0]["title"] == "style-4@1"


async def test_search_finds_by_description_and_says_when_nothing_matches(harness, session_factory):
    await save(session_factory, "rainy-city", description="wet neon streets at night")
    await save(session_factory, "sunny", description="beach")
    _, reply = await reply_to(harness, "stylecode search", query="neon street")
    assert "**rainy-city**" in data(reply)["embeds"][0]["description"]
    assert "sunny" not in data(reply)["embeds"][0]["description"]
    token = harness.send(harness.payloads.command("stylecode search", query="volcano"))
    assert (await harness.ephemeral_error(token)).startswith("No style matches `volcano`.")


async def test_similar_ranks_by_distance(harness, session_factory):
    await save(session_factory, "base", CODE)
    await save(session_factory, "far", OTHER_CODE)
    near = parse_code(CODE)
    near_code = type(near)((*near.levels[:-1], (near.levels[-1] + 1) % 64), 0).canonical
    await save(session_factory, "near", near_code)
    token = harness.send(harness.payloads.command("stylecode similar", style="base"))
    reply = await harness.first(token, "edit_original")  # after deferring: see test_similar_defers_before_searching
    lines = reply.embeds[0]["description"].splitlines()
    assert [line.split("**")[1] for line in lines] == ["near", "far"]  # itself left out


@pytest.mark.parametrize("typed", ["Neon", "#neon", "NEON", " #Neon "])
async def test_browse_tag_is_normalised_as_the_registry_stores_it(harness, session_factory, typed):
    for index in range(6):  # two pages
        await save(session_factory, f"neon-{index}", tags="neon")
    _, first = await reply_to(harness, "stylecode browse", sort="new", tag=typed)
    embed = data(first)["embeds"][0]
    assert embed["title"] == "Styles · new · #neon"
    assert names_in(embed) == [f"neon-{i}" for i in (5, 4, 3, 2, 1)]
    page2 = await harness.first(harness.send(harness.payloads.click(first, "▶")), "callback")
    assert names_in(data(page2)["embeds"][0]) == ["neon-0"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"tag": "n"}, "The tag `n` is not valid: tags are 2-24 characters of a-z, 0-9 and `-`."),
        ({"tag": "neon!"}, "The tag `neon!` is not valid"),
        ({"tag": "neon noir"}, "Browse one tag at a time: `neon` or `noir`."),
        ({"tag": "#"}, "`#` is not a tag: tags are 2-24 characters of a-z, 0-9 and `-`, e.g. `neon`."),
        ({"sort": "oldest"}, "`oldest` is not a sort; use one of new, popular, trending, favourites."),
    ],
)
async def test_browse_bad_inputs(harness, options, expected):
    token = harness.send(harness.payloads.command("stylecode browse", **options))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message


async def test_browse_pages_forward_with_one_query_and_back_after_deferring(harness, session_factory, monkeypatch):
    for index in range(11):  # three pages of five
        await save(session_factory, f"style-{index:02d}")
    queries = []
    real_browse = registry.browse

    async def counting_browse(*args, **kwargs):
        queries.append(kwargs.get("cursor"))
        return await real_browse(*args, **kwargs)

    monkeypatch.setattr(registry, "browse", counting_browse)
    _, page1 = await reply_to(harness, "stylecode browse", sort="new")
    page2 = await harness.first(harness.send(harness.payloads.click(page1, "▶")), "callback")
    queries.clear()
    page3 = await harness.first(harness.send(harness.payloads.click(page2, "▶")), "callback")
    assert page3.payload["type"] == 7 and data(page3)["embeds"][0]["footer"]["text"] == "Page 3"
    assert names_in(data(page3)["embeds"][0]) == ["style-00"]
    assert len(queries) == 1 and queries[0] is not None  # straight to page 3 with the cursor from page 2
    queries.clear()

    back = harness.send(harness.payloads.click(page3, "◀"))
    deferred = await harness.first(back, "callback")
    assert deferred.payload["type"] == 6  # acknowledged before walking from the first page
    redrawn = await harness.first(back, "edit_original")
    assert redrawn.message_id == page3.message_id and redrawn.embeds[0]["footer"]["text"] == "Page 2"
    assert names_in(redrawn) == [f"style-{i:02d}" for i in (5, 4, 3, 2, 1)]
    assert len(queries) == 2  # page 1, then page 2


# --- public listings show only what anyone in the channel may see ------------------------------------


async def test_public_listings_never_show_the_invokers_private_styles(harness, session_factory):
    await save(session_factory, "alice-public", tags="city", description="neon city")
    await save(session_factory, "alice-secret", tags="city", description="neon city", visibility="private")
    async with session_factory() as session:
        for name, guild in (("here-only", GUILD_ID), ("elsewhere", GUILD_ID + 1)):
            await registry.create_style(
                session, name=name, code=OTHER_CODE, owner_id=BOB, guild_id=guild, visibility="guild",
                tags="city", description="neon city",
            )  # fmt: skip
    _, browsed = await reply_to(harness, "stylecode browse", sort="new", tag="city")
    assert not browsed.ephemeral and names_in(data(browsed)["embeds"][0]) == ["here-only", "alice-public"]
    menu = next(c for row in data(browsed)["components"] for c in row["components"] if c["type"] == 3)
    assert [o["value"] for o in menu["options"]] == ["here-only", "alice-public"]

    _, found = await reply_to(harness, "stylecode search", query="neon city")
    assert not found.ephemeral and sorted(names_in(data(found)["embeds"][0])) == ["alice-public", "here-only"]

    token = harness.send(harness.payloads.command("stylecode similar", style="alice-public"))
    similar = await harness.first(token, "edit_original")
    assert names_in(similar) == ["here-only"]  # not alice-secret, though it has the very same code

    token = harness.send(harness.payloads.command("stylecode search", query="secret"))
    assert (await harness.ephemeral_error(token)).startswith("No style matches `secret`.")


async def test_page_buttons_show_the_same_page_whoever_clicks(harness, session_factory):
    for index in range(6):
        await save(session_factory, f"shared-{index}")
    await save(session_factory, "bobs-secret", owner=BOB, visibility="private")
    await save(session_factory, "alices-secret", visibility="private")
    _, first = await reply_to(harness, "stylecode browse", sort="new")
    clicks = {who: harness.payloads.click(first, "▶", user_id=who) for who in (ALICE, BOB)}  # the same button
    pages = {}
    for who, click in clicks.items():
        pages[who] = data(await harness.first(harness.send(click), "callback"))["embeds"][0]
    assert pages[ALICE] == pages[BOB]
    assert names_in(pages[ALICE]) == ["shared-0"]


# --- similar -----------------------------------------------------------------------------------------


async def test_similar_defers_before_searching(harness, session_factory):
    await save(session_factory, "base", CODE)
    await save(session_factory, "far", OTHER_CODE)
    token = harness.send(harness.payloads.command("stylecode similar", style=CODE))
    deferred = await harness.first(token, "callback")
    assert deferred.payload["type"] == 5 and not deferred.ephemeral
    reply = await harness.first(token, "edit_original")
    assert reply.embeds[0]["title"] == f"Styles like {CODE}" and names_in(reply) == ["base", "far"]


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("C_d_AAI_rQglIvUb1_f!0", "Character 20 of the stylecode, `!`, is not a base64 symbol."),
        ("neon-nior", "There is no style named `neon-nior`. Did you mean `neon-noir`?"),
    ],
)
async def test_similar_bad_inputs(harness, session_factory, style, expected):
    await save(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("stylecode similar", style=style))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message
    assert harness.standin.of_kind("delete_original", token)  # the public placeholder is gone
