"""A restarted bot: the buttons on old messages still work, and every job the old process left behind is
resumed or made again and posted in its channel, once."""

from __future__ import annotations

import registry
from bot.frontend.app import StylecodesBot
from bot.jobs import new_job_id
from tests.bot.frontend.helpers import CODE, fields, save, usage_of
from tests.bot.frontend.payloads import BOB
from tests.bot.frontend.standin import Call


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
