"""/stylecode registry commands, through the real tree, against a migrated SQLite registry."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

import registry
from stylecodes.codec import mix, parse_code
from tests.bot.frontend.conftest import make_settings, slow_job
from tests.bot.frontend.payloads import ALICE, BOB, CHANNEL_ID, GUILD_ID, MODERATOR

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
    token = harness.send(harness.payloads.command("stylecode similar", style="base"))
    reply = await harness.first(token, "edit_original")  # after deferring: see test_similar_defers_before_searching
    lines = reply.embeds[0]["description"].splitlines()
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


async def test_fork_keeps_the_originals_visibility_unless_told(harness, session_factory):
    async with session_factory() as session:
        await registry.create_style(
            session, name="guild-look", code=CODE, owner_id=BOB, guild_id=GUILD_ID, visibility="guild"
        )
    for new_name, options in (("kept-in-guild", {}), ("made-public", {"visibility": "public"})):
        token, reply = await reply_to(harness, "stylecode fork", source="guild-look", new_name=new_name, **options)
        assert data(reply)["embeds"][0]["title"] == f"Forked `guild-look` as `{new_name}@1`"
        await harness.first(token, "edit_original", within=60)  # preview of the fork
    async with session_factory() as session:
        kept = await registry.get_style(session, "kept-in-guild", user_id=ALICE, guild_id=GUILD_ID)
        public = await registry.get_style(session, "made-public", user_id=ALICE, guild_id=GUILD_ID)
    assert (kept.visibility, public.visibility) == ("guild", "public")


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


# --- browse: tags, bad inputs, paging ----------------------------------------------------------------


def names_in(call_or_embed) -> list[str]:
    if isinstance(call_or_embed, dict):
        embed = call_or_embed
    else:
        embed = (call_or_embed.embeds or data(call_or_embed)["embeds"])[0]
    return [line.split("**")[1] for line in embed["description"].splitlines() if "**" in line]


@pytest.mark.parametrize("typed", ["Neon", "#neon", "NEON", " #Neon "])
async def test_browse_tag_is_normalised_as_the_registry_stores_it(harness, session_factory, typed):
    for index in range(6):  # two pages
        await create(session_factory, f"neon-{index}", tags="neon")
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
        await create(session_factory, f"style-{index:02d}")
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
    await create(session_factory, "alice-public", tags="city", description="neon city")
    await create(session_factory, "alice-secret", tags="city", description="neon city", visibility="private")
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
        await create(session_factory, f"shared-{index}")
    await create(session_factory, "bobs-secret", owner=BOB, visibility="private")
    await create(session_factory, "alices-secret", visibility="private")
    _, first = await reply_to(harness, "stylecode browse", sort="new")
    clicks = {who: harness.payloads.click(first, "▶", user_id=who) for who in (ALICE, BOB)}  # the same button
    pages = {}
    for who, click in clicks.items():
        pages[who] = data(await harness.first(harness.send(click), "callback"))["embeds"][0]
    assert pages[ALICE] == pages[BOB]
    assert names_in(pages[ALICE]) == ["shared-0"]


# --- similar -----------------------------------------------------------------------------------------


async def test_similar_defers_before_searching(harness, session_factory):
    await create(session_factory, "base", CODE)
    await create(session_factory, "far", OTHER_CODE)
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
    await create(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("stylecode similar", style=style))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message
    assert harness.standin.of_kind("delete_original", token)  # the public placeholder is gone


# --- unknown names and bad codes, for every command that takes them ----------------------------------


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("stylecode history", {"name": "neon-nior"}),
        ("stylecode decode", {"code": "neon-nior"}),
        ("stylecode fork", {"source": "neon-nior", "new_name": "my-copy"}),
        ("stylecode favourite", {"name": "neon-nior"}),
        ("stylecode delete", {"name": "neon-nior"}),
        ("stylecode update", {"name": "neon-nior", "code": OTHER_CODE}),
    ],
)
async def test_unknown_names_suggest_close_ones(harness, session_factory, path, options):
    await create(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command(path, **options))
    message = await harness.ephemeral_error(token)
    assert message == "There is no style named `neon-nior`. Did you mean `neon-noir`?", message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("nope", "A stylecode is 21 characters long"),
        ("C_d_AAI_rQglIvUb1_f!0", "Character 20 of the stylecode, `!`, is not a base64 symbol."),
    ],
)
async def test_update_with_a_bad_code_explains_it(harness, session_factory, code, expected):
    await create(session_factory, "my-style")
    token = harness.send(harness.payloads.command("stylecode update", name="my-style", code=code))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message
    async with session_factory() as session:
        assert len(await registry.list_revisions(session, "my-style", user_id=ALICE, guild_id=None)) == 1


# --- Discord's embed limits --------------------------------------------------------------------------


async def test_show_of_a_style_with_many_long_revisions_fits_discords_limits(harness, session_factory):
    await create(session_factory, "long-notes", description="d" * 300, tags=" ".join(f"tag-{i}" for i in range(8)))
    base = parse_code(CODE)
    codes = [type(base)(tuple((level + n) % 64 for level in base.levels), 0) for n in range(1, 30)]
    async with session_factory() as session:
        for code in codes:
            await registry.add_revision(session, "long-notes", code=code, user_id=ALICE, note="n" * 200)
    for reference in ("long-notes", "long-notes@1"):
        _, reply = await reply_to(harness, "stylecode show", name=reference)
        shown = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}
        revisions = shown["Revisions (30)"]
        assert len(revisions) <= 1024  # the stand-in refuses more, as Discord does
        current = "@30" if reference == "long-notes" else "@1"
        assert f"→ {current} `" in revisions  # the revision shown is always listed
    assert not harness.standin.violations


async def test_history_with_many_long_uses_fits_discords_limits(harness, session_factory):
    await create(session_factory, "busy")
    async with session_factory() as session:
        revision = await registry.resolve_reference(session, "busy", user_id=ALICE, guild_id=None)
        for index in range(10):
            job_id = f"{index:032x}"
            await registry.record_usage(
                session, job_id=job_id, user_id=BOB, guild_id=GUILD_ID, channel_id=1, prompt="p" * 500, seed=index,
                steps=2, guidance_scale=3.0, strength=0.9, width=64, height=64, model_version=0,
                revision_id=revision.id,
            )  # fmt: skip
            await registry.set_usage_status(session, job_id, "done")
            link = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{1200000000000000000 + index}"
            await registry.mark_usage_delivered(session, job_id, message_link=link)
    _, reply = await reply_to(harness, "stylecode history", name="busy")
    shown = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}
    assert len(shown["Recent"]) <= 1024
    assert shown["Recent"].endswith("more")  # says that some were left out
    assert shown["Recent"].startswith(f"<@{BOB}> · done · ")
    assert not harness.standin.violations


async def test_history_escapes_other_users_prompts(harness, session_factory):
    await create(session_factory, "target")
    async with session_factory() as session:
        revision = await registry.resolve_reference(session, "target", user_id=ALICE, guild_id=None)
        await registry.record_usage(
            session, job_id="f" * 32, user_id=BOB, guild_id=GUILD_ID, channel_id=1,
            prompt="[free nitro](https://evil.example) **now** @everyone", seed=1, steps=2, guidance_scale=3.0,
            strength=0.9, width=64, height=64, model_version=0, revision_id=revision.id,
        )  # fmt: skip
    _, reply = await reply_to(harness, "stylecode history", name="target")
    recent = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}["Recent"]
    assert "\\[free nitro](https://evil.example)" in recent  # shown as typed, not as a masked link
    assert not re.search(r"(?<!\\)\[free nitro\]", recent)
    assert "\\*\\*now\\*\\*" in recent and "@everyone" not in recent


# --- why a saved style has no preview grid ----------------------------------------------------------


async def footer_after_preview(harness, token) -> str:
    edit = await harness.first(token, "edit_original", within=60)
    assert edit.files == []
    return edit.embeds[0]["footer"]["text"]


async def test_an_unserved_version_is_named_in_the_footer(harness):
    token = harness.send(
        harness.payloads.command("stylecode save", name="old-style", code="Aj8dPwAACD8rECAlCC8UGzU/HwI")
    )
    assert await footer_after_preview(harness, token) == (
        "No preview grid: stylecodes of version 1 are not served here, so none can be rendered."
    )


class TestPreviewRejections:
    @pytest.fixture
    def settings(self):
        return make_settings(queue_cap=2, max_jobs_per_user=1)

    @pytest.fixture
    def engine(self, scripted_engine):
        return scripted_engine

    async def test_a_preview_is_rendered_even_at_the_per_user_limit(self, harness, scripted_engine):
        scripted_engine.hold()
        await harness.dispatcher.submit(slow_job(ALICE))  # Alice's one job
        token = harness.send(harness.payloads.command("stylecode save", name="my-style", code=CODE))
        await harness.first(token, "callback")
        scripted_engine.release()
        grid = await harness.first(token, "edit_original", within=60)
        assert "footer" not in grid.embeds[0], grid.embeds[0]["footer"]
        assert [f.filename for f in grid.files] == ["preview.webp"]

    async def test_a_full_queue_is_named_in_the_footer(self, harness, scripted_engine):
        scripted_engine.hold()
        await harness.dispatcher.submit(slow_job(BOB))
        await harness.dispatcher.submit(slow_job(MODERATOR))
        token = harness.send(harness.payloads.command("stylecode save", name="my-style", code=CODE))
        assert await footer_after_preview(harness, token) == (
            "No preview grid: the bot was busy (2 jobs waiting) when it was saved."
        )

    async def test_a_worker_failure_gives_its_reason_in_the_footer(self, harness, scripted_engine):
        scripted_engine.fail_prompts_with = "a cow"  # one of the four preview prompts
        token = harness.send(harness.payloads.command("stylecode save", name="my-style", code=CODE))
        assert await footer_after_preview(harness, token) == (
            "No preview grid: the worker could not render it: The model failed on this job "
            "(RuntimeError: the scripted engine failed). Please try again later."
        )
