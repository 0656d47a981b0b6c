"""The stand-in holds the bot to Discord's limits: what Discord would refuse, it refuses with 400."""

from __future__ import annotations

import discord
import pytest

from tests.bot.frontend.discord_limits import callback_problems, message_problems
from tests.bot.frontend.payloads import CHANNEL_ID


def embed(**overrides) -> dict:
    return {"title": "t", "description": "d", "fields": [{"name": "n", "value": "v"}], **overrides}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"content": "x" * 2001}, "content has 2001 characters; the limit is 2000"),
        ({"embeds": [embed()] * 11}, "11 embeds; the limit is 10"),
        ({"embeds": [embed(title="x" * 257)]}, "embed 0 title has 257 characters; the limit is 256"),
        ({"embeds": [embed(description="x" * 4097)]}, "embed 0 description has 4097 characters; the limit is 4096"),
        (
            {"embeds": [embed(fields=[{"name": "n", "value": "x" * 1025}])]},
            "value has 1025 characters; the limit is 1024",
        ),
        ({"embeds": [embed(fields=[{"name": "x" * 257, "value": "v"}])]}, "name has 257 characters; the limit is 256"),
        ({"embeds": [embed(fields=[{"name": "n", "value": ""}])]}, "value is empty"),
        ({"embeds": [embed(fields=[{"name": "n", "value": "v"}] * 26)]}, "embed 0 has 26 fields; the limit is 25"),
        (
            {"embeds": [embed(description="x" * 4000), embed(description="x" * 2000)]},
            "the embeds hold 6006 characters in all; the limit is 6000",
        ),
        (
            {"components": [{"type": 1, "components": [{"type": 2, "label": "b", "custom_id": "x" * 101}]}]},
            "custom_id has 101 characters; the limit is 100",
        ),
        ({"components": [{"type": 1, "components": []}] * 6}, "components has 6 action rows; the limit is 5"),
    ],
)
def test_messages_over_discords_limits_are_refused(body, problem):
    problems = message_problems(body)
    assert any(problem in p for p in problems), problems


def test_messages_within_the_limits_pass():
    body = {
        "content": "x" * 2000,
        "embeds": [embed(description="x" * 4000, fields=[{"name": "n", "value": "x" * 1024}])],
        "components": [{"type": 1, "components": [{"type": 2, "label": "b", "custom_id": "x" * 100}]}] * 5,
    }
    assert message_problems(body) == []


def test_autocomplete_and_modal_limits():
    choices = [{"name": f"c{i}", "value": f"c{i}"} for i in range(26)]
    assert callback_problems({"type": 8, "data": {"choices": choices}}, []) == [
        "26 autocomplete choices; the limit is 25"
    ]
    modal = {"type": 9, "data": {"title": "x" * 46, "custom_id": "m", "components": []}}
    assert callback_problems(modal, []) == ["modal title has 46 characters; the limit is 45"]


async def test_the_stand_in_answers_400_and_records_the_violation(harness):
    channel = harness.bot.get_partial_messageable(CHANNEL_ID)
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(embed=discord.Embed(description="x" * 4097))
    assert refused.value.status == 400 and refused.value.code == 50035
    assert harness.standin.violations == [
        ("channel_message", ["embed 0 description has 4097 characters; the limit is 4096"])
    ]
    assert harness.standin.of_kind("channel_message_invalid") and not harness.standin.of_kind("channel_message")
    harness.standin.violations.clear()  # provoked on purpose: the harness fails any test that leaves one
