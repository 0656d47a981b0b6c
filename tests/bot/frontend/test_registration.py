"""The slash-command schema the bot would publish, from `Command.to_dict(tree)`: never synced in tests."""

from __future__ import annotations

import discord
import pytest
from discord.ext import commands

from bot.config import Settings
from bot.frontend.app import EXTENSIONS, ShardedStylecodesBot, StylecodesBot, create_bot
from bot.frontend.views import DYNAMIC_ITEMS
from tests.bot.frontend.conftest import make_settings

STYLECODE_SUBCOMMANDS = {
    "encode", "save", "update", "show", "browse", "search", "similar", "history", "mix", "random", "decode",
    "fork", "delete", "favourite",
}  # fmt: skip


def schema(harness) -> dict[str, dict]:
    return {command.name: command.to_dict(harness.bot.tree) for command in harness.bot.tree.get_commands()}


def options(command: dict) -> dict[str, dict]:
    return {option["name"]: option for option in command.get("options", [])}


async def test_top_level_commands_and_subcommands(harness):
    commands_ = schema(harness)
    assert set(commands_) == {"imagine", "stylecode", "settings"}
    assert set(options(commands_["stylecode"])) == STYLECODE_SUBCOMMANDS
    assert set(options(commands_["settings"])) == {"show", "set"}
    assert all(len(c["description"]) <= 100 for c in commands_.values())


async def test_imagine_options_match_the_issue(harness):
    imagine = options(schema(harness)["imagine"])
    assert list(imagine) == [
        "prompt", "code", "style_image", "strength", "negative", "seed", "steps", "guidance", "count",
    ]  # fmt: skip
    assert imagine["prompt"]["type"] == 3 and imagine["prompt"]["required"] is True
    assert imagine["code"]["type"] == 3 and imagine["code"]["autocomplete"] is True
    assert imagine["style_image"]["type"] == 11  # an attachment
    assert (imagine["strength"]["type"], imagine["strength"]["min_value"], imagine["strength"]["max_value"]) == (
        10,
        0,
        1.5,
    )
    assert (imagine["count"]["type"], imagine["count"]["min_value"], imagine["count"]["max_value"]) == (4, 1, 4)
    assert (imagine["steps"]["min_value"], imagine["steps"]["max_value"]) == (1, 100)
    assert (imagine["seed"]["min_value"], imagine["seed"]["max_value"]) == (0, 2**32 - 1)
    assert all(not imagine[name].get("required", False) for name in list(imagine)[1:])


async def test_stylecode_options(harness):
    stylecode = options(schema(harness)["stylecode"])
    encode = options(stylecode["encode"])
    assert encode["image"]["type"] == 11 and encode["image"]["required"] is True
    assert (encode["name"]["min_length"], encode["name"]["max_length"]) == (3, 32)
    save = options(stylecode["save"])
    assert [c["value"] for c in save["visibility"]["choices"]] == ["public", "guild", "private"]
    browse = options(stylecode["browse"])
    assert [c["value"] for c in browse["sort"]["choices"]] == ["new", "popular", "trending", "favourites"]
    for name in ("show", "update", "history", "delete", "favourite"):
        assert options(stylecode[name])["name"]["autocomplete"] is True, name


async def test_settings_is_for_server_admins_only(harness):
    settings = schema(harness)["settings"]
    assert int(settings["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
    assert settings["contexts"] == [0]  # guilds only, not DMs


async def test_persistent_views_and_extensions_are_registered(harness):
    assert list(harness.bot.extensions) == list(EXTENSIONS)
    registered = set(harness.bot._connection._view_store._dynamic_items.values())
    assert registered == set(DYNAMIC_ITEMS)
    assert harness.bot.allowed_mentions is not None and harness.bot.allowed_mentions.to_dict()["parse"] == []
    assert harness.standin.of_kind("command_sync") == []


def test_sharding_is_chosen_by_settings():
    resources = type("R", (), {"settings": make_settings(shard_count=0)})()
    assert type(create_bot(resources)) is StylecodesBot  # type: ignore[arg-type]
    resources.settings = make_settings(shard_count=2)
    bot = create_bot(resources)  # type: ignore[arg-type]
    assert isinstance(bot, ShardedStylecodesBot) and isinstance(bot, commands.AutoShardedBot)
    assert bot.shard_count == 2
    resources.settings = make_settings(shard_count=4, shard_ids=[2, 3])  # the second of two bot processes
    bot = create_bot(resources)  # type: ignore[arg-type]
    assert (bot.shard_count, bot.shard_ids) == (4, [2, 3])


@pytest.mark.parametrize(("count", "ids"), [(0, "0"), (2, "1,2"), (4, "-1")])
def test_shard_ids_outside_the_shard_count_are_refused(monkeypatch, count, ids):
    monkeypatch.setenv("STYLECODES_SHARD_COUNT", str(count))
    monkeypatch.setenv("STYLECODES_SHARD_IDS", ids)
    with pytest.raises(ValueError, match="needs STYLECODES_SHARD_COUNT above every id"):
        Settings(_env_file=None)
