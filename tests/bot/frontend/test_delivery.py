"""The result of an /imagine reaches its user whatever Discord does: retries, the channel when the token
expired or Discord keeps failing, a private word when nothing can be posted, files too large explained."""

from __future__ import annotations

import asyncio
import re

import pytest

from stylecodes.codec import parse_code
from tests.bot.frontend.conftest import png
from tests.bot.frontend.helpers import (
    CODE,
    done_event,
    fields,
    gated,
    imagine_until_queued,
    job_id_of,
    script_jobs,
    usage_of,
)
from tests.bot.frontend.payloads import ALICE, BOB, Attachment


async def test_expired_token_posts_the_result_in_the_channel(harness, session_factory):
    token = harness.send(harness.payloads.command("imagine", prompt="late", code=CODE, steps=2, seed=9))
    await harness.first(token, "edit_original")  # queued
    harness.standin.expire(token)  # 15 minutes pass: webhook calls now get 401
    message = await harness.standin.wait_for(
        lambda calls: next((c for c in calls if c.kind == "channel_message" and c.embeds), None)
    )
    assert message.content.startswith(f"<@{ALICE}>")
    assert message.payload["allowed_mentions"]["users"] == [ALICE]  # pings the requester only
    assert [f.filename for f in message.files] == ["image_1.png"]
    assert fields(message)["Seed"] == "9"
    assert harness.standin.of_kind("edit_original_refused", token)


async def test_a_server_error_on_delivery_is_retried(harness, monkeypatch):
    gate = asyncio.Event()
    script_jobs(harness, monkeypatch, lambda job: gated(gate, done_event()))
    token = await imagine_until_queued(harness)
    harness.standin.fail("edit_original", 500, times=1)
    gate.set()
    final = await harness.final_edit(token)
    assert [f.filename for f in final.files] == ["image_1.png"]
    assert len(harness.standin.of_kind("edit_original_failed", token)) == 1
    assert not harness.standin.of_kind("channel_message")


async def test_a_dropped_connection_on_delivery_is_retried(harness, monkeypatch):
    gate = asyncio.Event()
    script_jobs(harness, monkeypatch, lambda job: gated(gate, done_event()))
    token = await imagine_until_queued(harness)
    harness.standin.fail("edit_original", 0, times=1)
    gate.set()
    final = await harness.final_edit(token)
    assert [f.filename for f in final.files] == ["image_1.png"]
    assert len(harness.standin.of_kind("edit_original_failed", token)) == 1


async def test_a_lasting_outage_of_the_original_posts_the_result_in_the_channel(
    harness, monkeypatch, fast_discord_retries
):
    gate = asyncio.Event()
    script_jobs(harness, monkeypatch, lambda job: gated(gate, done_event()))
    token = await imagine_until_queued(harness)
    harness.standin.fail("edit_original", 503, times=None)
    gate.set()
    posted = await harness.standin.wait_for(
        lambda calls: next((c for c in calls if c.kind == "channel_message" and c.embeds), None)
    )
    assert posted.content == f"<@{ALICE}> your images are ready:"
    assert [f.filename for f in posted.files] == ["image_1.png"]
    assert [b["label"] for b in posted.buttons()] == ["Reroll", "Variations", "Save style", "Delete"]
    assert len(harness.standin.of_kind("edit_original_failed", token)) == 5  # discord.py's own tries
    await harness.bot.wait_idle()
    usage = await usage_of(harness.bot.resources.session_factory, job_id_of(posted))
    assert usage.message_link.endswith(str(posted.message_id))


async def test_when_nothing_can_be_posted_the_user_is_told_privately(harness, monkeypatch, fast_discord_retries):
    gate = asyncio.Event()
    script_jobs(harness, monkeypatch, lambda job: gated(gate, done_event()))
    token = await imagine_until_queued(harness)
    harness.standin.fail("edit_original", 500, times=None)
    harness.standin.fail("channel_message", 500, times=None)
    gate.set()
    notice = await harness.first(token, "followup")
    assert notice.ephemeral
    assert notice.content.startswith(
        "❌ Your request finished, but Discord would not let me post the result (Discord answered 500"
    )
    assert notice.content.endswith("Please try again in a minute.")


async def test_images_too_large_for_discord_are_explained(harness, monkeypatch):
    gate = asyncio.Event()
    script_jobs(harness, monkeypatch, lambda job: gated(gate, done_event(count=2)))
    token = await imagine_until_queued(harness, count=2)
    harness.standin.upload_limit = 100  # bytes: the two PNGs are larger
    gate.set()
    final = await harness.final_edit(token)
    assert harness.standin.of_kind("edit_original_too_large", token)
    assert final.files == [] and final.embeds[0]["description"] == "p"  # the rest of the result is there
    assert re.fullmatch(
        r"❌ Your images are ready, but Discord refused them as too large \(\d+ KB in all\)\. "
        r"Ask for fewer at a time \(`count`\)\.",
        final.content,
    ), final.content
    assert [b["label"] for b in final.buttons()] == ["Reroll", "Variations", "Save style", "Delete"]


async def test_a_broken_event_stream_is_reported_instead_of_a_stale_painting(harness, monkeypatch):
    from bot.jobs import JobStarted

    async def broken(job):
        yield JobStarted()
        raise ConnectionError("the transport went away")

    script_jobs(harness, monkeypatch, broken)
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2))
    message = await harness.standin.wait_for(
        lambda calls: next(
            (c for c in calls if c.token == token and c.kind == "edit_original" and "lost track" in c.content), None
        )
    )
    assert message.content.startswith("❌ I lost track of your job: something went wrong on our side (reference `")


class TestHeldWorker:
    """The worker holds each engine call until the test releases it."""

    @pytest.fixture
    def engine(self, scripted_engine):
        return scripted_engine

    async def test_a_failure_after_the_token_expired_is_posted_in_the_channel(self, harness, scripted_engine):
        scripted_engine.hold()
        scripted_engine.fail_prompts_with = "doomed"
        token = harness.send(harness.payloads.command("imagine", prompt="doomed", code=CODE, steps=2))
        await harness.first(token, "edit_original")  # queued
        harness.standin.expire(token)
        scripted_engine.release()
        posted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_message"), None)
        )
        assert posted.content == (
            f"<@{ALICE}> ❌ The model failed on this job (RuntimeError: the scripted engine failed). "
            "Please try again later."
        )
        assert posted.payload["allowed_mentions"]["users"] == [ALICE]

    async def test_a_style_image_whose_encoding_outlived_the_token_still_gets_its_images(
        self, harness, scripted_engine
    ):
        scripted_engine.hold()
        image = Attachment("ref.png", "image/png", png(colour=(10, 200, 30)))
        token = harness.send(harness.payloads.command("imagine", prompt="p", style_image=image, steps=2))
        await harness.first(token, "callback")  # deferred
        await asyncio.to_thread(scripted_engine.entered.wait, 10)  # encoding
        harness.standin.expire(token)
        scripted_engine.release()
        posted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_message" and c.embeds), None)
        )
        assert posted.content == f"<@{ALICE}> your images are ready:"
        assert parse_code(fields(posted)["Style"]).version == 0 and [f.filename for f in posted.files] == [
            "image_1.png"
        ]

    async def test_delete_works_on_a_result_posted_in_the_channel(self, harness, scripted_engine):
        scripted_engine.hold()
        token = harness.send(harness.payloads.command("imagine", prompt="late", code=CODE, steps=2))
        await harness.first(token, "edit_original")
        harness.standin.expire(token)
        scripted_engine.release()
        posted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_message" and c.embeds), None)
        )
        refused = harness.send(harness.payloads.click(posted, "Delete", user_id=BOB))
        assert "Only the person who asked for these images" in await harness.ephemeral_error(refused)
        click = harness.send(harness.payloads.click(posted, "Delete"))
        assert (await harness.first(click, "callback")).payload["type"] == 6
        await harness.first(click, "delete_original")
        assert posted.message_id not in harness.standin.messages

    async def test_delete_falls_back_to_the_bots_own_message_when_the_interaction_cannot(
        self, harness, scripted_engine
    ):
        token = harness.send(harness.payloads.command("imagine", prompt="late", code=CODE, steps=2))
        final = await harness.final_edit(token)
        harness.standin.fail("delete_original", 404)  # Discord refuses the deletion through the interaction
        harness.send(harness.payloads.click(final, "Delete"))
        deleted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_delete"), None)
        )
        assert deleted.message_id == final.message_id
        assert final.message_id not in harness.standin.messages
