"""/imagine and the buttons on its result, driven through discord.py's real tree and view store."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
from unittest.mock import patch

import pytest
from sqlalchemy import select

import registry
from bot.frontend.app import AckGate, StylecodesBot
from bot.jobs import new_job_id
from stylecodes.codec import mix, parse_code
from tests.bot.frontend.conftest import make_settings, png, slow_job
from tests.bot.frontend.payloads import ALICE, BOB, MODERATOR, NSFW_CHANNEL_ID, Attachment
from tests.bot.frontend.standin import Call

CODE = "C_d_AAI_rQglIvUb1_fC0"  # a version-0 (demo) code
OTHER_CODE = "AAAAAAAAAAAAAAAAAAAA0"


def fields(call) -> dict[str, str]:
    return {f["name"]: f["value"] for f in call.embeds[0]["fields"]}


async def usage_of(session_factory, job_id: str) -> registry.Usage:
    async with session_factory() as session:
        return await registry.get_usage(session, job_id)


def job_id_of(call) -> str:
    reroll = next(b for b in call.buttons() if b["label"] == "Reroll")
    return reroll["custom_id"].rsplit(":", 1)[-1]


async def save(session_factory, name: str, code: str = CODE, *, owner: int = ALICE, visibility: str = "public"):
    async with session_factory() as session:
        return await registry.create_style(
            session, name=name, code=code, owner_id=owner, guild_id=None if visibility != "guild" else 1,
            visibility=visibility,
        )  # fmt: skip


async def test_imagine_defers_queues_and_posts_images_with_embed_and_buttons(harness, session_factory):
    payload = harness.payloads.command("imagine", prompt="a lighthouse", code=CODE, seed=42, steps=2, count=2)
    token = harness.send(payload)
    defer = await harness.first(token, "callback")
    assert defer.payload["type"] == 5 and not defer.ephemeral
    queued = await harness.first(token, "edit_original")
    assert queued.content.startswith("Queued")
    final = await harness.final_edit(token)
    assert [f.filename for f in final.files] == ["image_1.png", "image_2.png"]
    assert all(f.data.startswith(b"\x89PNG") for f in final.files)
    embed = final.embeds[0]
    assert embed["description"] == "a lighthouse"
    shown = fields(final)
    assert shown["Style"] == CODE
    assert shown["Seeds"] == "42, 43"
    assert (shown["Strength"], shown["Steps"], shown["Guidance"], shown["Model version"]) == ("0.9", "2", "3", "0")
    assert [b["label"] for b in final.buttons()] == ["Reroll", "Variations", "Save style", "Delete"]
    await harness.bot.wait_idle()  # the link is stored once the edit returns
    usage = await usage_of(session_factory, job_id_of(final))
    assert (usage.status, usage.code, usage.seed, usage.count, usage.steps) == ("done", CODE, 42, 2, 2)
    assert usage.message_link and usage.message_link.endswith(str(final.message_id))


async def test_imagine_resolves_names_revisions_and_mixes(harness, session_factory):
    await save(session_factory, "neon-noir", CODE)
    async with session_factory() as session:
        await registry.add_revision(session, "neon-noir", code=OTHER_CODE, user_id=ALICE)

    token = harness.send(harness.payloads.command("imagine", prompt="p", code="neon-noir@1", steps=2, seed=1))
    final = await harness.final_edit(token)
    assert fields(final)["Style"] == f"neon-noir@1\n`{CODE}`"
    usage = await usage_of(session_factory, job_id_of(final))
    assert usage.revision_id is not None and usage.code == CODE  # recorded against the style's revision

    token = harness.send(harness.payloads.command("imagine", prompt="p", code=f"neon-noir::2 {CODE}::1", steps=2))
    final = await harness.final_edit(token)
    expected = mix(f"{OTHER_CODE}::2 {CODE}::1")  # the name means its latest revision
    assert fields(final)["Style"] == f"neon-noir::2 {CODE}::1\n`{expected.canonical}`"


async def test_imagine_autocompletes_names_and_the_last_term_of_a_mix(harness, session_factory):
    await save(session_factory, "neon-noir")
    await save(session_factory, "neon-glow")
    await save(session_factory, "pastel")
    token = harness.send(harness.payloads.command("imagine", focused="code", prompt="p", code="neon"))
    reply = await harness.first(token, "callback")
    assert reply.payload["type"] == 8
    assert [c["value"] for c in reply.payload["data"]["choices"]] == ["neon-glow", "neon-noir"]

    token = harness.send(harness.payloads.command("imagine", focused="code", prompt="p", code="neon-noir::2 pa"))
    reply = await harness.first(token, "callback")
    assert [c["value"] for c in reply.payload["data"]["choices"]] == ["neon-noir::2 pastel"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("C_d_AAI_rQglIvUb1_f!0", "Character 20 of the stylecode, `!`, is not a base64 symbol."),
        ("neon-nior", "There is no style named `neon-nior`. Did you mean `neon-noir`?"),
        ("neon-noir@7", "`neon-noir` has revisions 1 to 1; there is no revision 7."),
        (f"{CODE}::x", f"The weight in `{CODE}::x` must be a number"),
        ("Aj8dPwAACD8rECAlCC8UGzU/HwI", "Stylecodes of version 1 are not served here"),
    ],
)
async def test_imagine_bad_styles_get_the_error_message_privately(harness, session_factory, code, expected):
    await save(session_factory, "neon-noir")
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=code, steps=2))
    message = await harness.ephemeral_error(token)
    assert message.startswith(expected)
    # The public "thinking..." placeholder was removed, so the error stays private.
    assert harness.standin.of_kind("delete_original", token)
    assert not harness.standin.of_kind("edit_original", token)


async def test_someone_elses_private_style_is_refused(harness, session_factory):
    await save(session_factory, "bobs-secret", owner=BOB, visibility="private")
    token = harness.send(harness.payloads.command("imagine", prompt="p", code="bobs-secret", steps=2))
    assert await harness.ephemeral_error(token) == "`bobs-secret` is a private style; only its owner can use it."


async def test_imagine_with_style_image_encodes_then_generates(harness):
    image = Attachment("ref.png", "image/png", png(colour=(10, 200, 30)))
    token = harness.send(harness.payloads.command("imagine", prompt="p", style_image=image, steps=2, seed=5))
    final = await harness.final_edit(token)
    style = fields(final)["Style"]
    assert parse_code(style).version == 0
    assert harness.standin.cdn_requests


async def test_style_image_that_is_not_an_image_is_refused_before_download(harness):
    image = Attachment("notes.txt", "text/plain", b"hello")
    token = harness.send(harness.payloads.command("imagine", prompt="p", style_image=image))
    message = await harness.ephemeral_error(token)
    assert "`notes.txt` is `text/plain`, not an image I can read" in message
    assert harness.standin.cdn_requests == []


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


async def test_reroll_variations_and_save_style_buttons(harness, session_factory):
    token = harness.send(harness.payloads.command("imagine", prompt="boat", code=CODE, steps=2, seed=100))
    final = await harness.final_edit(token)

    reroll = harness.send(harness.payloads.click(final, "Reroll"))
    rerolled = await harness.final_edit(reroll)
    assert fields(rerolled)["Style"] == CODE and rerolled.embeds[0]["description"] == "boat"
    assert fields(rerolled)["Seed"] != "100"  # a new seed (2^-32 chance of a clash)

    variations = harness.send(harness.payloads.click(final, "Variations"))
    varied = await harness.final_edit(variations)
    assert fields(varied)["Seeds"] == "101, 102, 103, 104"
    assert len(varied.files) == 4

    save_click = harness.send(harness.payloads.click(final, "Save style"))
    modal = await harness.first(save_click, "callback")
    assert modal.payload["type"] == 9
    submit = harness.send(harness.payloads.modal_submit(modal, {"name": "boat-style", "tags": "sea, boat"}))
    saved = await harness.first(submit, "callback")
    assert saved.payload["data"]["embeds"][0]["title"] == "Saved `boat-style@1`"
    async with session_factory() as session:
        revision = await registry.resolve_reference(session, "boat-style", user_id=ALICE, guild_id=None)
    assert revision.code == CODE and revision.style.tag_list == ["sea", "boat"]


async def test_reroll_of_several_images_keeps_consecutive_seeds_that_recovery_can_rebuild(harness, session_factory):
    from bot.dispatch.recovery import job_from_usage
    from bot.jobs import MAX_SEED

    token = harness.send(harness.payloads.command("imagine", prompt="boat", code=CODE, steps=2, seed=100, count=2))
    final = await harness.final_edit(token)
    rerolled = await harness.final_edit(harness.send(harness.payloads.click(final, "Reroll")))
    first, second = (int(seed) for seed in fields(rerolled)["Seeds"].split(", "))
    assert second == (first + 1) % (MAX_SEED + 1) and first != 100
    async with session_factory() as session:
        usages = await registry.unfinished_usages(session)  # none: both jobs finished
        assert usages == []
        rows = (await session.scalars(select(registry.Usage).order_by(registry.Usage.id))).all()
    rebuilt = job_from_usage(rows[-1])  # what a restart would run for the rerolled job
    assert [request.seed for request in rebuilt.requests] == [first, second]


async def test_delete_button_is_for_the_requester_or_a_moderator(harness):
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2))
    final = await harness.final_edit(token)

    refused = harness.send(harness.payloads.click(final, "Delete", user_id=BOB))
    assert "Only the person who asked for these images, or a moderator" in await harness.ephemeral_error(refused)
    assert final.message_id in harness.standin.messages

    by_moderator = harness.send(harness.payloads.click(final, "Delete", user_id=MODERATOR))
    await harness.first(by_moderator, "delete_original")
    assert final.message_id not in harness.standin.messages

    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2))
    final = await harness.final_edit(token)
    by_requester = harness.send(harness.payloads.click(final, "Delete", user_id=ALICE))
    await harness.first(by_requester, "delete_original")
    assert final.message_id not in harness.standin.messages


async def test_guild_defaults_apply_when_options_are_left_out(harness, session_factory):
    from tests.bot.frontend.payloads import GUILD_ID

    async with session_factory() as session:
        await registry.update_guild_settings(session, GUILD_ID, default_strength=0.4, default_steps=3)
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE))
    shown = fields(await harness.final_edit(token))
    assert (shown["Strength"], shown["Steps"]) == ("0.4", "3")


# --- busy worker: queue cap, per-user limit, progress -------------------------------------------------


class TestBusy:
    @pytest.fixture
    def settings(self):
        return make_settings(queue_cap=2, max_jobs_per_user=1, progress_interval_s=1.5)

    @pytest.fixture
    def step_delay_s(self) -> float:
        return 0.15  # each denoising step of the demo model takes this long: a busy worker

    async def test_per_user_limit_is_explained_and_the_usage_cancelled(self, harness, session_factory):
        await harness.dispatcher.submit(slow_job(ALICE))
        token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2))
        message = await harness.ephemeral_error(token)
        assert message == "You already have 1 job queued or running; wait for one to finish, then try again."
        async with session_factory() as session:
            statuses = list(await session.scalars(select(registry.Usage.status)))
        assert statuses == ["cancelled"]

    async def test_queue_full_says_try_again_in_a_minute(self, harness):
        await harness.dispatcher.submit(slow_job(BOB))
        await harness.dispatcher.submit(slow_job(MODERATOR))
        token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2))
        assert await harness.ephemeral_error(token) == "The bot is busy (2 jobs are waiting), try again in a minute."

    @pytest.mark.parametrize("label", ["Reroll", "Variations"])
    async def test_buttons_respect_the_per_user_limit(self, harness, session_factory, label):
        final = await harness.final_edit(harness.send(harness.payloads.command("imagine", prompt="p", steps=2)))
        await harness.bot.wait_idle()
        await harness.dispatcher.submit(slow_job(ALICE))
        click = harness.send(harness.payloads.click(final, label))
        message = await harness.ephemeral_error(click)
        assert message == "You already have 1 job queued or running; wait for one to finish, then try again."
        assert harness.standin.of_kind("delete_original", click)  # the public placeholder is gone

    @pytest.mark.parametrize("label", ["Reroll", "Variations"])
    async def test_buttons_say_when_the_queue_is_full(self, harness, label):
        final = await harness.final_edit(harness.send(harness.payloads.command("imagine", prompt="p", steps=2)))
        await harness.bot.wait_idle()
        await harness.dispatcher.submit(slow_job(BOB))
        await harness.dispatcher.submit(slow_job(MODERATOR))
        click = harness.send(harness.payloads.click(final, label))
        assert await harness.ephemeral_error(click) == "The bot is busy (2 jobs are waiting), try again in a minute."

    async def test_progress_edits_show_steps_and_previews_at_most_every_1_5_s(self, harness):
        token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=30, seed=1))
        final = await harness.final_edit(token, within=60)
        edits = [c for c in harness.standin.of_kind("edit_original", token) if c is not final]
        progress = [c for c in edits if c.content.startswith("Painting… step")]
        assert progress, [c.content for c in edits]
        assert all(c.files and c.files[0].filename == "preview.png" for c in progress)
        # As the stand-in receives them: the bot waits 1.5 s from the end of one edit to the start of the next.
        gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
        assert all(gap >= 1.5 for gap in gaps), gaps


# --- safety -------------------------------------------------------------------------------------------


class FlaggingEngine:
    """The demo engine, with a stand-in safety checker that flags prompts containing "flagme"."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, requests, on_step=None):
        results = self._engine.generate(requests, on_step)
        return [dataclasses.replace(r, nsfw="flagme" in r.request.prompt) for r in results]


class TestSafety:
    @pytest.fixture
    def engine(self, demo_engine):
        return FlaggingEngine(demo_engine)

    async def test_flagged_images_are_withheld_outside_nsfw_channels(self, harness):
        token = harness.send(harness.payloads.command("imagine", prompt="flagme", code=CODE, steps=2, count=2))
        final = await harness.final_edit(token)
        assert final.files == []
        assert "2 image(s) withheld" in fields(final)["Notes"]

    async def test_flagged_images_are_spoilered_in_age_restricted_channels(self, harness):
        payload = harness.payloads.command("imagine", prompt="flagme", code=CODE, steps=2, channel_id=NSFW_CHANNEL_ID)
        final = await harness.final_edit(harness.send(payload))
        assert [f.filename for f in final.files] == ["SPOILER_image_1.png"]

    async def test_flagged_images_are_spoilered_anywhere_when_the_server_allows_it(self, harness, session_factory):
        from tests.bot.frontend.payloads import GUILD_ID

        async with session_factory() as session:
            await registry.update_guild_settings(session, GUILD_ID, allow_nsfw_outside_nsfw_channels=True)
        token = harness.send(harness.payloads.command("imagine", prompt="flagme", code=CODE, steps=2, count=2))
        final = await harness.final_edit(token)
        assert [f.filename for f in final.files] == ["SPOILER_image_1.png", "SPOILER_image_2.png"]
        assert "withheld" not in fields(final).get("Notes", "")

    async def test_unflagged_images_are_posted(self, harness):
        final = await harness.final_edit(harness.send(harness.payloads.command("imagine", prompt="ok", steps=2)))
        assert [f.filename for f in final.files] == ["image_1.png"]
        assert fields(final)["Style"] == "none (plain Stable Diffusion)"


# --- restarts -----------------------------------------------------------------------------------------


async def restarted(harness) -> StylecodesBot:
    """A second bot process on the same registry and dispatcher: nothing of the first one's memory."""
    await harness.bot.close()
    bot = StylecodesBot(harness.bot.resources)
    await bot.login("test-token")
    return bot


async def left_behind(session_factory, *, seed: int = 3, **style) -> str:
    """A job the previous bot process recorded (for Bob, in the test channel) before it died; its job id.
    `style`: `revision_id=` of a named style; the raw CODE by default."""
    from tests.bot.frontend.payloads import CHANNEL_ID

    style = style or {"code": CODE}
    job_id = new_job_id()
    async with session_factory() as session:
        await registry.record_usage(
            session, job_id=job_id, user_id=BOB, guild_id=None, channel_id=CHANNEL_ID, prompt="lost", seed=seed,
            steps=2, guidance_scale=3.0, strength=0.9, width=64, height=64, model_version=0, **style,
        )  # fmt: skip
    return job_id


async def result_posted_after_a_restart(harness) -> Call:
    """Restart the bot and return the result it posts in the channel for a job the old process left behind."""
    bot = await restarted(harness)
    try:
        posted = await harness.standin.wait_for(
            lambda calls: next((c for c in calls if c.kind == "channel_message" and c.embeds), None)
        )
        await bot.wait_idle()
    finally:
        await bot.close()
    return posted


async def test_buttons_on_old_messages_work_after_a_restart(harness):
    token = harness.send(harness.payloads.command("imagine", prompt="old", code=CODE, steps=2, seed=7))
    final = await harness.final_edit(token)
    await harness.bot.wait_idle()
    bot = await restarted(harness)
    try:
        click = harness.payloads.click(final, "Variations")
        bot._connection.parse_interaction_create(click)
        varied = await harness.final_edit(click["token"])
        assert fields(varied)["Seeds"] == "8, 9, 10, 11"
        await bot.wait_idle()
    finally:
        await bot.close()


async def test_jobs_left_unfinished_by_a_restart_are_resumed_and_posted_in_their_channel(harness, session_factory):
    job_id = await left_behind(session_factory)  # queued by the previous process, which then died
    posted = await result_posted_after_a_restart(harness)
    assert posted.content == f"<@{BOB}> your images (finished after a restart):"
    assert [f.filename for f in posted.files] == ["image_1.png"] and fields(posted)["Seed"] == "3"
    usage = await usage_of(session_factory, job_id)
    assert usage.status == "done" and usage.message_link.endswith(str(posted.message_id))


async def test_outcomes_finished_but_never_posted_are_posted_after_a_restart_and_only_once(
    harness, session_factory
):
    """The old process died between the worker's result and its post: the images are made again (same
    seeds) and posted, a failure is told with its reason, and a second restart posts neither again."""
    done_job, failed_job = await left_behind(session_factory, seed=3), await left_behind(session_factory, seed=4)
    async with session_factory() as session:
        await registry.set_usage_status(session, done_job, "done")
        await registry.set_usage_status(session, failed_job, "failed", error="The engine ran out of memory.")
    posted = await result_posted_after_a_restart(harness)
    channel_posts = [c for c in harness.standin.calls if c.kind == "channel_message"]
    assert sorted(c.content for c in channel_posts) == [
        f"<@{BOB}> your images (finished after a restart):",
        f"<@{BOB}> your job failed: The engine ran out of memory.",
    ]
    assert [f.filename for f in posted.files] == ["image_1.png"] and fields(posted)["Seed"] == "3"
    done, failed = await usage_of(session_factory, done_job), await usage_of(session_factory, failed_job)
    assert done.status == "done" and done.message_link.endswith(str(posted.message_id))
    assert done.delivered_at is not None and failed.delivered_at is not None

    again = await restarted(harness)
    try:
        await again.wait_idle()  # its recovery ran in setup_hook's background task
    finally:
        await again.close()
    assert len([c for c in harness.standin.calls if c.kind == "channel_message"]) == len(channel_posts)


async def test_a_resumed_job_of_a_named_style_shows_name_and_revision(harness, session_factory):
    revision = await save(session_factory, "neon-noir")
    await left_behind(session_factory, revision_id=revision.id)
    posted = await result_posted_after_a_restart(harness)
    assert fields(posted)["Style"] == f"neon-noir@1\n`{CODE}`"


# --- acknowledgements first ---------------------------------------------------------------------------


async def test_ack_gate_holds_follow_up_work_until_every_arrival_is_acknowledged():
    from types import SimpleNamespace

    gate = AckGate()
    first, second = SimpleNamespace(extras={}), SimpleNamespace(extras={})
    gate.arrived(first)
    gate.arrived(second)
    gate.acknowledged(first)
    waiting = asyncio.create_task(gate.wait_turn())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # `second` is still waiting for its acknowledgement
    gate.acknowledged(second)
    gate.acknowledged(second)  # counted once
    await asyncio.wait_for(waiting, 1)
    gate.arrived(first)  # never acknowledged (a bug elsewhere): follow-up work is held back at most MAX_WAIT_S
    waits: list[float] = []

    async def record_timeout(awaitable, bound_s):  # the bound itself, not the scheduler's latency under load
        waits.append(bound_s)
        return await real_wait_for(awaitable, bound_s)

    real_wait_for = asyncio.wait_for
    started = time.monotonic()
    with patch("bot.frontend.app.asyncio.wait_for", record_timeout):
        await gate.wait_turn()
    assert waits == [AckGate.MAX_WAIT_S]
    assert time.monotonic() - started >= AckGate.MAX_WAIT_S  # it did hold the work back until the bound


# --- more bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("base::-1", "The weight in `base::-1` must be a positive number."),
        ("base::2 other::x", "The weight in `other::x` must be a number, like `::2` or `::0.5`."),
        (f"base::2 {CODE}::0", f"The weight in `{CODE}::0` must be a positive number."),
    ],
)
async def test_a_bad_weight_in_a_mix_names_the_term_as_typed(harness, session_factory, typed, expected):
    await save(session_factory, "base")
    await save(session_factory, "other", OTHER_CODE)
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=typed, steps=2))
    assert await harness.ephemeral_error(token) == expected


async def test_code_and_style_image_together_are_refused_at_once(harness):
    image = Attachment("ref.png", "image/png", png())
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, style_image=image))
    reply = await harness.first(token, "callback")
    assert reply.payload["type"] == 4 and reply.ephemeral
    assert reply.payload["data"]["content"] == "Give either `code` or `style_image`, not both."
    assert harness.standin.cdn_requests == []


async def test_an_oversized_style_image_is_refused_before_download(harness):
    big = Attachment("huge.png", "image/png", png(), size=11 * 1024 * 1024)
    token = harness.send(harness.payloads.command("imagine", prompt="p", style_image=big))
    assert await harness.ephemeral_error(token) == (
        "`huge.png` is 11.0 MB; the limit is 10.0 MB. Attach a smaller or more compressed picture."
    )
    assert harness.standin.cdn_requests == []


async def test_reroll_and_variations_of_a_request_no_longer_recorded_say_what_to_do(harness, session_factory):
    from sqlalchemy import delete

    final = await harness.final_edit(harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2)))
    await harness.bot.wait_idle()
    async with session_factory() as session:
        await session.execute(delete(registry.Usage).where(registry.Usage.job_id == job_id_of(final)))
        await session.commit()
    for label in ("Reroll", "Variations"):
        click = harness.send(harness.payloads.click(final, label))
        assert await harness.ephemeral_error(click) == (
            "The request these images were made from is no longer available, so they can't be rerolled or varied. "
            "Run `/imagine` again with the prompt and seed shown on them."
        )


# --- the result, whatever Discord does ----------------------------------------------------------------


def done_event(count: int = 1):
    from bot.jobs import ImagineResult, JobDone

    return JobDone(ImagineResult(images_png=[png()] * count, nsfw=[False] * count))


def script_jobs(harness, monkeypatch, script, *, position: int = 1) -> None:
    """The dispatcher answers every submitted job with the events of `script(job)` (an async generator)."""
    from bot.dispatch.base import JobHandle

    async def submit(job):
        return JobHandle(job.job_id, position, lambda: script(job))

    monkeypatch.setattr(harness.dispatcher, "submit", submit)


async def gated(gate: asyncio.Event, *events):
    await gate.wait()
    for event in events:
        yield event


async def imagine_until_queued(harness, **options) -> str:
    token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2, **options))
    await harness.first(token, "edit_original")  # "Queued"
    return token


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


class TestProgress:
    @pytest.fixture
    def settings(self):
        return make_settings(progress_interval_s=1.0)  # the least the settings allow

    async def test_progress_that_comes_too_soon_is_sent_when_the_interval_ends(self, harness, monkeypatch):
        from bot.frontend.embeds import progress_text
        from bot.jobs import JobProgress, JobQueued, JobStarted

        async def script(job):
            for event in (JobQueued(1), JobStarted(), JobProgress(1, 4), JobProgress(2, 4)):
                yield event  # all within the interval after the "Queued" edit: only the newest is shown
            await asyncio.sleep(2.5)
            yield JobProgress(3, 4)  # the interval has passed: shown at once
            await asyncio.sleep(0.1)
            yield JobProgress(4, 4)  # too soon, and then overtaken by the result: never shown
            await asyncio.sleep(0.1)
            yield done_event()

        script_jobs(harness, monkeypatch, script)
        token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=4))
        final = await harness.final_edit(token)
        await harness.bot.wait_idle()
        edits = harness.standin.of_kind("edit_original", token)
        assert edits[-1] is final  # no progress edit after the result
        assert [c.content for c in edits[:-1]] == ["Queued: you're next.", progress_text(2, 4), progress_text(3, 4)]
        gaps = [b.at - a.at for a, b in itertools.pairwise(edits[:-1])]
        assert all(gap >= 1.0 for gap in gaps), gaps

    async def test_queue_positions_are_updated_as_they_change(self, harness, monkeypatch):
        from bot.jobs import JobQueued, JobStarted

        async def script(job):
            yield JobQueued(3)  # what the "Queued" edit already says
            for event in (JobQueued(2), JobQueued(1), JobStarted()):
                await asyncio.sleep(1.2)
                yield event
            await asyncio.sleep(1.2)
            yield done_event()

        script_jobs(harness, monkeypatch, script, position=3)
        token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=2))
        final = await harness.final_edit(token)
        edits = harness.standin.of_kind("edit_original", token)
        assert [c.content for c in edits if c is not final] == [
            "Queued: position 3.",
            "Queued: position 2.",
            "Queued: you're next.",
            "Painting…",
        ]


class TestHeldWorker:
    """The worker holds each engine call until the test releases it."""

    @pytest.fixture
    def engine(self, scripted_engine):
        return scripted_engine

    async def test_the_queue_position_is_shown_when_others_are_ahead(self, harness, scripted_engine):
        scripted_engine.hold()
        await harness.dispatcher.submit(slow_job(BOB, steps=2))
        await asyncio.to_thread(scripted_engine.entered.wait, 10)  # Bob's job is running
        await harness.dispatcher.submit(slow_job(MODERATOR, steps=2))  # and the moderator's waits
        token = harness.send(harness.payloads.command("imagine", prompt="p", code=CODE, steps=3))
        queued = await harness.first(token, "edit_original")
        assert queued.content == "Queued: position 2."
        scripted_engine.release()
        await harness.final_edit(token)

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
