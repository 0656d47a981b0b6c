"""/stylecode registry commands, through the real tree, against a migrated SQLite registry."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import registry
from stylecodes.codec import mix, parse_code
from tests.bot.frontend.payloads import ALICE, BOB

CODE = "C_d_AAI_rQglIvUb1_fC0"
OTHER_CODE = "AAAAAAAAAAAAAAAAAAAA0"


async def create(session_factory, name: str, code: str = CODE, *, owner: int = ALICE, **extra):
    async with session_factory() as session:
        return await registry.create_style(session, name=name, code=code, owner_id=owner, guild_id=None, **extra)


async def reply_to(harness, path: str, **options):
    token = harness.send(harness.payloads.command(path, **options))
    return token, await harness.first(token, "callback")


def data(call) -> dict:
    return call.payload["data"]


async def test_save_stores_the_style_and_attaches_the_preview_grid(harness, session_factory):
    token, reply = await reply_to(
        harness, "stylecode save", name="Neon-Noir", code=CODE, description="rainy city", tags="neon noir"
    )
    embed = data(reply)["embeds"][0]
    assert embed["title"] == "Saved `neon-noir@1`" and CODE in embed["description"]
    assert embed["footer"]["text"] == "Rendering the preview grid…"
    grid = await harness.first(token, "edit_original", within=60)
    assert [f.filename for f in grid.files] == ["preview.webp"]
    assert Image.open(io.BytesIO(grid.files[0].data)).size == (128, 128)  # 2x2 tiles of 64 px
    async with session_factory() as session:
        revision = await registry.resolve_reference(session, "neon-noir", user_id=ALICE, guild_id=None)
        assert await registry.get_revision_preview(session, revision.id) == grid.files[0].data
    assert revision.style.description == "rainy city" and revision.style.tag_list == ["neon", "noir"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"name": "ok-name", "code": "nope"}, "A stylecode is 21 characters long"),
        ({"name": "x", "code": CODE}, "`x` has 1 characters. Names are 3-32 characters"),
        ({"name": "taken", "code": CODE}, "The name `taken` is already taken"),
    ],
)
async def test_save_bad_inputs(harness, session_factory, options, expected):
    await create(session_factory, "taken", owner=BOB)
    token = harness.send(harness.payloads.command("stylecode save", **options))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message


async def test_update_adds_a_revision_only_for_the_owner(harness, session_factory):
    await create(session_factory, "my-style")
    await create(session_factory, "bobs", owner=BOB)
    token, reply = await reply_to(harness, "stylecode update", name="my-style", code=OTHER_CODE, note="darker")
    assert data(reply)["embeds"][0]["title"] == "Updated: `my-style@2`"
    await harness.first(token, "edit_original", within=60)  # its preview grid

    token = harness.send(harness.payloads.command("stylecode update", name="bobs", code=OTHER_CODE))
    message = await harness.ephemeral_error(token)
    assert message == "Only the owner of `bobs` can add a revision to it. Fork it to make your own version."


async def test_show_lists_code_revisions_author_uses_and_preview(harness, session_factory):
    revision = await create(session_factory, "neon-noir", description="rainy", tags="neon")
    async with session_factory() as session:
        await registry.add_revision(session, "neon-noir", code=OTHER_CODE, user_id=ALICE, note="v2")
        await registry.set_revision_preview(session, revision.id, _webp())
    _, reply = await reply_to(harness, "stylecode show", name="neon-noir@1")
    embed = data(reply)["embeds"][0]
    shown = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["title"] == "neon-noir@1" and CODE in embed["description"]
    assert shown["Author"] == f"<@{ALICE}>" and shown["Uses"] == "0" and shown["Tags"] == "#neon"
    assert shown["Revisions (2)"] == f"→ @1 `{CODE}`\n@2 `{OTHER_CODE}` v2"
    assert [f.filename for f in reply.files] == ["preview.webp"]
    assert [b["label"] for b in reply.buttons()] == ["Imagine with it", "Save as…"]


async def test_show_unknown_name_suggests_close_ones(harness, session_factory):
    await create(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("stylecode show", name="neon-nior"))
    assert await harness.ephemeral_error(token) == "There is no style named `neon-nior`. Did you mean `neon-noir`?"


async def test_browse_pages_forward_and_back_and_opens_a_style(harness, session_factory):
    for index in range(7):  # two pages of five
        await create(session_factory, f"style-{index}", tags="city")
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
    await create(session_factory, "rainy-city", description="wet neon streets at night")
    await create(session_factory, "sunny", description="beach")
    _, reply = await reply_to(harness, "stylecode search", query="neon street")
    assert "**rainy-city**" in data(reply)["embeds"][0]["description"]
    assert "sunny" not in data(reply)["embeds"][0]["description"]
    token = harness.send(harness.payloads.command("stylecode search", query="volcano"))
    assert (await harness.ephemeral_error(token)).startswith("No style matches `volcano`.")


async def test_similar_ranks_by_distance(harness, session_factory):
    await create(session_factory, "base", CODE)
    await create(session_factory, "far", OTHER_CODE)
    near = parse_code(CODE)
    near_code = type(near)((*near.levels[:-1], (near.levels[-1] + 1) % 64), 0).canonical
    await create(session_factory, "near", near_code)
    _, reply = await reply_to(harness, "stylecode similar", style="base")
    lines = data(reply)["embeds"][0]["description"].splitlines()
    assert [line.split("**")[1] for line in lines] == ["near", "far"]  # itself left out


async def test_history_shows_finished_generations(harness, session_factory):
    await create(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("imagine", prompt="harbour", code="neon-noir", steps=2))
    await harness.final_edit(token)
    await harness.bot.wait_idle()
    _, reply = await reply_to(harness, "stylecode history", name="neon-noir")
    shown = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}
    assert shown["Uses per revision"] == "@1: 1"
    assert shown["Recent"].startswith(f"<@{ALICE}> · done · harbour · [image](")


async def test_mix_random_and_decode(harness, session_factory):
    await create(session_factory, "neon-noir", OTHER_CODE)
    _, reply = await reply_to(harness, "stylecode mix", styles=f"neon-noir::2 {CODE}::1")
    assert mix(f"{OTHER_CODE}::2 {CODE}::1").canonical in data(reply)["embeds"][0]["description"]

    _, reply = await reply_to(harness, "stylecode random")
    assert parse_code(data(reply)["embeds"][0]["description"].strip("`\n ")).version == 0

    _, reply = await reply_to(harness, "stylecode decode", code=CODE)
    shown = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}
    assert shown["Encoder version"] == "0"
    assert [int(v) for v in shown["Levels (0-63)"].strip("`\n ").split()] == list(parse_code(CODE).levels)
    assert [f.filename for f in reply.files] == ["levels.png"]
    assert Image.open(io.BytesIO(reply.files[0].data)).size == (400, 140)

    token = harness.send(harness.payloads.command("stylecode mix", styles=f"{CODE}::2 Aj8dPwAACD8rECAlCC8UGzU/HwI"))
    assert (await harness.ephemeral_error(token)).startswith("Only codes of the same encoder version can be mixed")


async def test_fork_delete_and_favourite(harness, session_factory):
    await create(session_factory, "bobs", owner=BOB)
    token, reply = await reply_to(harness, "stylecode fork", source="bobs", new_name="alices-copy")
    assert data(reply)["embeds"][0]["title"] == "Forked `bobs` as `alices-copy@1`"
    await harness.first(token, "edit_original", within=60)  # preview of the fork

    _, reply = await reply_to(harness, "stylecode favourite", name="bobs")
    assert data(reply)["content"] == "Added `bobs` to your favourites." and reply.ephemeral
    _, reply = await reply_to(harness, "stylecode favourite", name="bobs")
    assert data(reply)["content"] == "Removed `bobs` from your favourites."

    token = harness.send(harness.payloads.command("stylecode delete", name="bobs"))
    message = await harness.ephemeral_error(token)
    assert message == "Only the owner of `bobs` can delete it. Fork it to make your own version."
    _, reply = await reply_to(harness, "stylecode delete", name="alices-copy")
    assert data(reply)["content"] == "Deleted `alices-copy`."
    token = harness.send(harness.payloads.command("stylecode show", name="alices-copy"))
    assert (await harness.ephemeral_error(token)).startswith("The style `alices-copy` was deleted.")


async def test_name_autocomplete(harness, session_factory):
    await create(session_factory, "neon-noir")
    await create(session_factory, "private-one", owner=BOB, visibility="private")
    token = harness.send(harness.payloads.command("stylecode show", focused="name", name="ne"))
    reply = await harness.first(token, "callback")
    assert reply.payload["data"]["choices"] == [{"name": "neon-noir", "value": "neon-noir"}]
    token = harness.send(harness.payloads.command("stylecode show", focused="name", name="pri"))
    assert (await harness.first(token, "callback")).payload["data"]["choices"] == []  # Bob's private style


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="WEBP")
    return buffer.getvalue()
