"""/settings: server admins only; the values are checked and used by /imagine."""

from __future__ import annotations

import registry
from tests.bot.frontend.payloads import ALICE, GUILD_ID, MODERATOR


async def test_admin_sets_and_shows_the_defaults(harness, session_factory):
    token = harness.send(
        harness.payloads.command(
            "settings set", user_id=MODERATOR, default_strength=0.5, allow_nsfw_outside_nsfw_channels=True
        )
    )
    reply = await harness.first(token, "callback")
    assert reply.ephemeral and reply.payload["data"]["content"] == "Saved."
    async with session_factory() as session:
        stored = await registry.get_guild_settings(session, GUILD_ID)
    assert (stored.default_strength, stored.default_steps, stored.allow_nsfw_outside_nsfw_channels) == (0.5, 20, True)

    token = harness.send(harness.payloads.command("settings show", user_id=MODERATOR))
    shown = {
        f["name"]: f["value"] for f in (await harness.first(token, "callback")).payload["data"]["embeds"][0]["fields"]
    }
    assert shown["Default strength"] == "0.5" and shown["Default steps"] == "20"
    assert shown["Flagged images outside age-restricted channels"].startswith("spoilered")


async def test_members_without_manage_server_are_refused(harness, session_factory):
    token = harness.send(harness.payloads.command("settings set", user_id=ALICE, default_steps=5))
    assert await harness.ephemeral_error(token) == "You need the manage guild permission to do that."
    async with session_factory() as session:
        assert (await registry.get_guild_settings(session, GUILD_ID)).default_steps == 20
