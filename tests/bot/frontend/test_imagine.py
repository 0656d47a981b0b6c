"""/imagine and the buttons on its result, driven through discord.py's real tree and view store: styles,
options, Reroll / Variations / Save style / Delete, the limits, safety, bad input, acknowledgements first.
Progress, delivery and restarts have their own files."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from unittest.mock import patch

import pytest
from sqlalchemy import select

import registry
from bot.frontend.app import AckGate
from stylecodes.codec import mix, parse_code
from tests.bot.frontend.conftest import make_settings, png, slow_job
from tests.bot.frontend.helpers import CODE, OTHER_CODE, fields, job_id_of, save, usage_of
from tests.bot.frontend.payloads import ALICE, BOB, MODERATOR, NSFW_CHANNEL_ID, Attachment


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


# --- busy worker: queue cap, per-user limit --------------------------------------------------------------


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
