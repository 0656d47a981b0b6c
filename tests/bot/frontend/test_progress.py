"""A queued /imagine's message while it waits and paints: queue positions and progress edits, at most one
per interval, always the latest, none after the result."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.bot.frontend.conftest import make_settings, slow_job
from tests.bot.frontend.helpers import CODE, done_event, script_jobs
from tests.bot.frontend.payloads import BOB, MODERATOR


class TestSlowWorker:
    """The default progress interval (1.5 s), and a worker slow enough to report progress."""

    @pytest.fixture
    def step_delay_s(self) -> float:
        return 0.15  # each denoising step of the demo model takes this long: a busy worker

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
