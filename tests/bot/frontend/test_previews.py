"""Why a saved style has no preview grid: the footer where the grid would be says it."""

from __future__ import annotations

import pytest

from tests.bot.frontend.conftest import make_settings, slow_job
from tests.bot.frontend.helpers import CODE
from tests.bot.frontend.payloads import ALICE, BOB, MODERATOR


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
