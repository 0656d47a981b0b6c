"""/stylecode encode: attachment checks before any download, the reply, and its buttons."""

from __future__ import annotations

import asyncio

import pytest

from stylecodes.codec import parse_code
from tests.bot.frontend.conftest import make_settings, png, slow_job
from tests.bot.frontend.payloads import ALICE, BOB, MODERATOR, Attachment


async def test_encode_replies_with_code_version_thumbnail_and_buttons(harness):
    token = harness.send(harness.payloads.command("stylecode encode", image=Attachment("cat.png", "image/png", png())))
    defer = await harness.first(token, "callback")
    assert defer.payload["type"] == 5  # deferred within the 3 s limit, before the download
    reply = await harness.first(token, "edit_original")
    embed = reply.embeds[0]
    code_text = embed["description"].strip("`\n ")
    code = parse_code(code_text)
    assert code.version == 0
    assert embed["fields"][0] == {"name": "Encoder version", "value": "0", "inline": True}
    assert embed["thumbnail"]["url"] == "attachment://source.png"
    assert [f.filename for f in reply.files] == ["source.png"]
    assert [b["label"] for b in reply.buttons()] == ["Imagine with it", "Save as…"]
    assert harness.standin.cdn_requests, "the picture was downloaded from the (stand-in) CDN"


async def test_non_image_attachment_is_refused_before_any_download(harness):
    token = harness.send(
        harness.payloads.command("stylecode encode", image=Attachment("a.pdf", "application/pdf", b"%PDF"))
    )
    reply = await harness.first(token, "callback")
    assert reply.payload["type"] == 4 and reply.ephemeral  # answered at once, privately; nothing deferred
    assert reply.payload["data"]["content"] == (
        "`a.pdf` is `application/pdf`, not an image I can read. Attach a PNG, JPEG, WebP or GIF picture."
    )
    assert harness.standin.cdn_requests == []


async def test_oversized_attachment_is_refused_from_its_declared_size(harness):
    big = Attachment("huge.png", "image/png", png(), size=11 * 1024 * 1024)
    token = harness.send(harness.payloads.command("stylecode encode", image=big))
    message = await harness.ephemeral_error(token)
    assert message == "`huge.png` is 11.0 MB; the limit is 10.0 MB. Attach a smaller or more compressed picture."
    assert harness.standin.cdn_requests == []


async def test_download_stops_at_the_limit_when_the_declared_size_lies(harness):
    liar = Attachment("liar.png", "image/png", png() + b"\0" * (10 * 1024 * 1024 + 1), size=2000)
    token = harness.send(harness.payloads.command("stylecode encode", image=liar))
    assert await harness.ephemeral_error(token) == "`liar.png` is larger than 10.0 MB. Attach a smaller picture."


async def test_only_discord_cdn_hosts_are_downloaded_from(harness):
    elsewhere = Attachment("x.png", "image/png", png(), url="http://127.0.0.1:9/attachments/x.png")
    token = harness.send(harness.payloads.command("stylecode encode", image=elsewhere))
    assert await harness.ephemeral_error(token) == (
        "That attachment is not hosted on Discord's CDN; upload the picture to Discord directly."
    )


async def test_corrupt_image_gets_the_image_error_privately(harness):
    token = harness.send(
        harness.payloads.command("stylecode encode", image=Attachment("bad.png", "image/png", b"junk"))
    )
    message = await harness.ephemeral_error(token)
    assert message == "The image is not an image PIL can read. Send a PNG, JPEG, WebP or GIF picture."  # ImageError
    assert harness.standin.of_kind("delete_original", token)  # the public placeholder is gone


async def test_encode_with_a_name_saves_the_style_and_attaches_its_preview_grid(harness, session_factory):
    import registry
    from tests.bot.frontend.payloads import ALICE

    token = harness.send(
        harness.payloads.command("stylecode encode", image=Attachment("cat.png", "image/png", png()), name="cat-style")
    )
    saved = await harness.first(token, "followup")
    assert saved.embeds[0]["title"] == "Saved `cat-style@1`"
    grid = await harness.first(token, "edit_followup", within=60)
    assert [f.filename for f in grid.files] == ["preview.webp"]
    assert grid.embeds[0]["image"]["url"] == "attachment://preview.webp"
    async with session_factory() as session:
        revision = await registry.resolve_reference(session, "cat-style", user_id=ALICE, guild_id=None)
        stored = await registry.get_revision_preview(session, revision.id)
    assert stored == grid.files[0].data  # the worker stored the grid in the registry


async def test_imagine_with_it_button_asks_for_a_prompt_then_generates(harness):
    token = harness.send(harness.payloads.command("stylecode encode", image=Attachment("cat.png", "image/png", png())))
    reply = await harness.first(token, "edit_original")
    code = reply.embeds[0]["description"].strip("`\n ")
    click = harness.send(harness.payloads.click(reply, "Imagine with it"))
    modal = await harness.first(click, "callback")
    assert modal.payload["type"] == 9 and modal.payload["data"]["title"] == "Imagine with this style"
    submit = harness.send(harness.payloads.modal_submit(modal, {"prompt": "a red barn"}))
    final = await harness.final_edit(submit)
    shown = {f["name"]: f["value"] for f in final.embeds[0]["fields"]}
    assert final.embeds[0]["description"] == "a red barn" and shown["Style"] == code


async def test_save_as_button_with_a_bad_name_explains_the_rule(harness):
    token = harness.send(harness.payloads.command("stylecode encode", image=Attachment("cat.png", "image/png", png())))
    reply = await harness.first(token, "edit_original")
    click = harness.send(harness.payloads.click(reply, "Save as…"))
    modal = await harness.first(click, "callback")
    submit = harness.send(harness.payloads.modal_submit(modal, {"name": "Bad Name!"}))
    message = await harness.ephemeral_error(submit)
    assert message.startswith("`bad name!` contains ' ', '!'.")


async def test_the_published_option_states_no_size_that_could_go_stale(harness):
    encode = harness.bot.tree.get_command("stylecode").get_command("encode").to_dict(harness.bot.tree)
    image = next(option for option in encode["options"] if option["name"] == "image")
    assert image["description"] == "The picture whose style you want (PNG, JPEG, WebP or GIF)."


class TestSmallLimit:
    @pytest.fixture
    def settings(self):
        return make_settings(max_attachment_bytes=1024 * 1024)

    async def test_the_configured_limit_is_enforced_and_named(self, harness):
        big = Attachment("big.png", "image/png", png(), size=2 * 1024 * 1024)
        token = harness.send(harness.payloads.command("stylecode encode", image=big))
        assert await harness.ephemeral_error(token) == (
            "`big.png` is 2.0 MB; the limit is 1.0 MB. Attach a smaller or more compressed picture."
        )


PICTURE = Attachment("c.png", "image/png", png())


class TestBusy:
    @pytest.fixture
    def settings(self):
        return make_settings(queue_cap=2, max_jobs_per_user=1)

    @pytest.fixture
    def engine(self, scripted_engine):
        scripted_engine.hold()  # the jobs below stay queued or running
        return scripted_engine

    async def test_per_user_limit(self, harness):
        await harness.dispatcher.submit(slow_job(ALICE))
        token = harness.send(harness.payloads.command("stylecode encode", image=PICTURE))
        message = await harness.ephemeral_error(token)
        assert message == "You already have 1 job queued or running; wait for one to finish, then try again."
        assert harness.standin.of_kind("delete_original", token)  # the public placeholder is gone

    async def test_queue_full(self, harness):
        await harness.dispatcher.submit(slow_job(BOB))
        await harness.dispatcher.submit(slow_job(MODERATOR))
        token = harness.send(harness.payloads.command("stylecode encode", image=PICTURE))
        assert await harness.ephemeral_error(token) == "The bot is busy (2 jobs are waiting), try again in a minute."


class TestExpiredToken:
    """Encoding outlives the interaction's 15 minutes: what it made is posted in the channel."""

    @pytest.fixture
    def engine(self, scripted_engine):
        scripted_engine.hold()
        return scripted_engine

    async def expire_while_encoding(self, harness, scripted_engine, **options) -> str:
        image = Attachment("cat.png", "image/png", png())
        token = harness.send(harness.payloads.command("stylecode encode", image=image, **options))
        await harness.first(token, "callback")  # deferred
        await asyncio.to_thread(scripted_engine.entered.wait, 10)  # the worker has the picture
        harness.standin.expire(token)
        scripted_engine.release()
        return token

    async def test_the_code_is_posted_in_the_channel(self, harness, scripted_engine):
        token = await self.expire_while_encoding(harness, scripted_engine)
        posted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_message"), None)
        )
        assert posted.content == f"<@{ALICE}> here is your stylecode:"
        assert posted.payload["allowed_mentions"]["users"] == [ALICE]
        assert parse_code(posted.embeds[0]["description"].strip("`\n ")).version == 0
        assert [f.filename for f in posted.files] == ["source.png"]
        assert [b["label"] for b in posted.buttons()] == ["Imagine with it", "Save as…"]
        assert harness.standin.of_kind("edit_original_refused", token)

    async def test_a_saved_name_is_announced_in_the_channel_too(self, harness, scripted_engine):
        await self.expire_while_encoding(harness, scripted_engine, name="late-cat")
        saved = await harness.standin.wait_for(
            lambda calls: next(
                (c for c in calls if c.kind == "channel_message" and c.embeds[0]["title"].startswith("Saved")), None
            )
        )
        assert saved.content == f"<@{ALICE}> saved your style:"
        assert saved.embeds[0]["title"] == "Saved `late-cat@1`"
        grid = await harness.standin.wait_for(lambda calls: next((c for c in calls if c.kind == "channel_edit"), None))
        assert grid.message_id == saved.message_id and [f.filename for f in grid.files] == ["preview.webp"]

    async def test_a_failure_is_posted_in_the_channel(self, harness, scripted_engine):
        scripted_engine.fail_encode = True
        await self.expire_while_encoding(harness, scripted_engine)
        posted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_message"), None)
        )
        assert posted.content == (
            f"<@{ALICE}> The model failed on this job (RuntimeError: the scripted engine failed). "
            "Please try again later."
        )
