"""/stylecode registry commands, through the real tree, against a migrated SQLite registry: save, update,
show, mix, random, decode, fork, delete, favourite, history, autocomplete; unknown names and bad codes for
every command; Discord's embed limits. The public listings (browse, search, similar) and the preview grid
have their own files."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

import registry
from stylecodes.codec import mix, parse_code
from stylecodes.versions import get_spec
from tests.bot.frontend.helpers import CODE, OTHER_CODE, data, reply_to, save
from tests.bot.frontend.payloads import ALICE, BOB, CHANNEL_ID, GUILD_ID


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="WEBP")
    return buffer.getvalue()


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
    await save(session_factory, "taken", owner=BOB)
    token = harness.send(harness.payloads.command("stylecode save", **options))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message


async def test_update_adds_a_revision_only_for_the_owner(harness, session_factory):
    await save(session_factory, "my-style")
    await save(session_factory, "bobs", owner=BOB)
    token, reply = await reply_to(harness, "stylecode update", name="my-style", code=OTHER_CODE, note="darker")
    assert data(reply)["embeds"][0]["title"] == "Updated: `my-style@2`"
    await harness.first(token, "edit_original", within=60)  # its preview grid

    token = harness.send(harness.payloads.command("stylecode update", name="bobs", code=OTHER_CODE))
    message = await harness.ephemeral_error(token)
    assert message == "Only the owner of `bobs` can add a revision to it. Fork it to make your own version."


async def test_show_lists_code_revisions_author_uses_and_preview(harness, session_factory):
    revision = await save(session_factory, "neon-noir", description="rainy", tags="neon")
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


async def test_show_links_public_styles_to_their_gallery_page(harness, session_factory):
    await save(session_factory, "neon-noir")
    await save(session_factory, "alice-secret", visibility="private")
    _, reply = await reply_to(harness, "stylecode show", name="neon-noir")
    assert data(reply)["embeds"][0]["url"] == "http://localhost:8080/styles/neon-noir"  # STYLECODES_WEB_* defaults
    _, reply = await reply_to(harness, "stylecode show", name="alice-secret")  # Alice owns it: she may see it
    assert "url" not in data(reply)["embeds"][0]


async def test_show_unknown_name_suggests_close_ones(harness, session_factory):
    await save(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("stylecode show", name="neon-nior"))
    assert await harness.ephemeral_error(token) == "There is no style named `neon-nior`. Did you mean `neon-noir`?"


async def test_history_shows_finished_generations(harness, session_factory):
    await save(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("imagine", prompt="harbour", code="neon-noir", steps=2))
    await harness.final_edit(token)
    await harness.bot.wait_idle()
    _, reply = await reply_to(harness, "stylecode history", name="neon-noir")
    shown = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}
    assert shown["Uses per revision"] == "@1: 1"
    assert shown["Recent"].startswith(f"<@{ALICE}> · done · harbour · [image](")


async def test_mix_random_and_decode(harness, session_factory):
    await save(session_factory, "neon-noir", OTHER_CODE)
    _, reply = await reply_to(harness, "stylecode mix", styles=f"neon-noir::2 {CODE}::1")
    assert mix(f"{OTHER_CODE}::2 {CODE}::1").canonical in data(reply)["embeds"][0]["description"]

    _, reply = await reply_to(harness, "stylecode random")
    random_embed = data(reply)["embeds"][0]
    assert parse_code(random_embed["description"].strip("`\n ")).version == 0
    assert random_embed["footer"]["text"] == "Drawn from the model's learned prior of real styles."  # the demo has one
    _, reply = await reply_to(harness, "stylecode random", uniform=True)
    assert data(reply)["embeds"][0]["footer"]["text"] == "Drawn from uniform: every level equally likely."

    _, reply = await reply_to(harness, "stylecode decode", code=CODE)
    shown = {f["name"]: f["value"] for f in data(reply)["embeds"][0]["fields"]}
    assert shown["Encoder version"] == "0"
    assert shown["Model"] == f"{get_spec(0).title} · {get_spec(0).short_fingerprint}"
    assert [int(v) for v in shown["Levels (0-63)"].strip("`\n ").split()] == list(parse_code(CODE).levels)
    assert [f.filename for f in reply.files] == ["levels.png"]
    assert Image.open(io.BytesIO(reply.files[0].data)).size == (400, 140)

    token = harness.send(harness.payloads.command("stylecode mix", styles=f"{CODE}::2 Aj8dPwAACD8rECAlCC8UGzU/HwI"))
    assert (await harness.ephemeral_error(token)).startswith("Only codes of the same encoder version can be mixed")


async def test_fork_delete_and_favourite(harness, session_factory):
    await save(session_factory, "bobs", owner=BOB)
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
    await save(session_factory, "neon-noir")
    await save(session_factory, "private-one", owner=BOB, visibility="private")
    token = harness.send(harness.payloads.command("stylecode show", focused="name", name="ne"))
    reply = await harness.first(token, "callback")
    assert reply.payload["data"]["choices"] == [{"name": "neon-noir", "value": "neon-noir"}]
    token = harness.send(harness.payloads.command("stylecode show", focused="name", name="pri"))
    assert (await harness.first(token, "callback")).payload["data"]["choices"] == []  # Bob's private style


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
    await save(session_factory, "neon-noir")
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
    await save(session_factory, "my-style")
    token = harness.send(harness.payloads.command("stylecode update", name="my-style", code=code))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected), message
    async with session_factory() as session:
        assert len(await registry.list_revisions(session, "my-style", user_id=ALICE, guild_id=None)) == 1


# --- Discord's embed limits --------------------------------------------------------------------------


async def test_show_of_a_style_with_many_long_revisions_fits_discords_limits(harness, session_factory):
    await save(session_factory, "long-notes", description="d" * 300, tags=" ".join(f"tag-{i}" for i in range(8)))
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
    await save(session_factory, "busy")
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
    await save(session_factory, "target")
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
