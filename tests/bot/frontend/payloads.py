"""Raw interaction payloads shaped as Discord sends them over the gateway (INTERACTION_CREATE).

Only the JSON is built here; the tests feed it to discord.py's own `parse_interaction_create`, so the
real CommandTree, the view store and the modal store do the dispatching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from tests.bot.frontend.standin import APPLICATION_ID, Call, StandIn, snowflake

GUILD_ID = 700000000000000001
CHANNEL_ID = 700000000000000002
NSFW_CHANNEL_ID = 700000000000000003
ALICE = 500000000000000001
BOB = 500000000000000002
MODERATOR = 500000000000000003

# Permission bits (discord.Permissions): what a member has in the channel of the interaction.
MEMBER_PERMISSIONS = discord.Permissions(send_messages=True, view_channel=True, attach_files=True).value
MODERATOR_PERMISSIONS = discord.Permissions(
    send_messages=True, view_channel=True, manage_messages=True, manage_guild=True
).value
APP_PERMISSIONS = discord.Permissions(send_messages=True, view_channel=True, attach_files=True, embed_links=True).value


@dataclass
class Attachment:
    """An uploaded file as Discord resolves it: metadata in the payload, bytes on the CDN."""

    filename: str
    content_type: str | None
    data: bytes
    url: str | None = None  # default: served by the stand-in under a Discord CDN host name
    size: int | None = None  # default: len(data); set to lie about it

    def resolved(self, standin: StandIn, attachment_id: int) -> dict:
        url = self.url or standin.add_blob(
            f"{CHANNEL_ID}/{attachment_id}/{self.filename}", self.data, self.content_type or ""
        )
        payload = {
            "id": str(attachment_id),
            "filename": self.filename,
            "size": self.size if self.size is not None else len(self.data),
            "url": url,
            "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net"),
            "width": 64,
            "height": 64,
            "ephemeral": True,
        }
        if self.content_type is not None:
            payload["content_type"] = self.content_type
        return payload


def user(user_id: int) -> dict:
    name = {ALICE: "alice", BOB: "bob", MODERATOR: "mod"}.get(user_id, f"user{user_id}")
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "public_flags": 0,
    }


def member(user_id: int, permissions: int) -> dict:
    return {
        "user": user(user_id),
        "roles": [],
        "joined_at": "2025-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "nick": None,
        "avatar": None,
        "premium_since": None,
        "communication_disabled_until": None,
        "permissions": str(permissions),
    }


def channel(channel_id: int = CHANNEL_ID) -> dict:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(GUILD_ID),
        "name": "art" if channel_id == NSFW_CHANNEL_ID else "general",
        "position": 0,
        "nsfw": channel_id == NSFW_CHANNEL_ID,
        "permission_overwrites": [],
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


class Payloads:
    """Builds interactions for one bot, registering their tokens with the stand-in."""

    def __init__(self, tree: app_commands.CommandTree, standin: StandIn) -> None:
        self.tree = tree
        self.standin = standin

    def _base(self, kind: int, data: dict, user_id: int, channel_id: int) -> dict:
        token = f"token-{snowflake()}"
        self.standin.interaction_channel[token] = channel_id
        is_moderator = user_id == MODERATOR
        return {
            "id": str(snowflake()),
            "application_id": str(APPLICATION_ID),
            "type": kind,
            "data": data,
            "guild_id": str(GUILD_ID),
            "guild": {"id": str(GUILD_ID), "locale": "en-US", "features": []},
            "channel_id": str(channel_id),
            "channel": channel(channel_id),
            "member": member(user_id, MODERATOR_PERMISSIONS if is_moderator else MEMBER_PERMISSIONS),
            "token": token,
            "version": 1,
            "app_permissions": str(APP_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
            "context": 0,
            "attachment_size_limit": 25 * 1024 * 1024,
        }

    # --- application commands ------------------------------------------------------------------
    def command(
        self,
        path: str,
        *,
        user_id: int = ALICE,
        channel_id: int = CHANNEL_ID,
        focused: str | None = None,
        **options: Any,
    ) -> dict:
        """`/path option:value ...` (type 2), or its autocomplete (type 4) when `focused` names an option."""
        names = path.split()
        command = self.tree.get_command(names[0])
        if command is None:
            raise KeyError(f"no command /{names[0]}")
        resolved: dict[str, dict] = {}
        leaf_options = []
        for name, value in options.items():
            parameter = next(p for p in command_at(command, names).parameters if p.name == name)
            option = {"name": name, "type": parameter.type.value}
            if isinstance(value, Attachment):
                attachment_id = snowflake()
                resolved.setdefault("attachments", {})[str(attachment_id)] = value.resolved(self.standin, attachment_id)
                option["value"] = str(attachment_id)
            else:
                option["value"] = value
            if name == focused:
                option["focused"] = True
            leaf_options.append(option)
        for sub in reversed(names[1:]):
            leaf_options = [{"name": sub, "type": 1, "options": leaf_options}]
        data: dict[str, Any] = {"id": str(snowflake()), "name": names[0], "type": 1, "options": leaf_options}
        if resolved:
            data["resolved"] = resolved
        return self._base(4 if focused else 2, data, user_id, channel_id)

    # --- components and modals -----------------------------------------------------------------
    def click(self, on: Call, label: str, *, user_id: int = ALICE, channel_id: int = CHANNEL_ID) -> dict:
        """A button click (type 3) on the message `on` created or edited."""
        message = self.standin.messages[on.message_id]  # type: ignore[index]
        button = next((b for b in _components(message) if b.get("label") == label), None)
        if button is None:
            raise KeyError(
                f"no button {label!r} on the message; it has {[b.get('label') for b in _components(message)]}"
            )
        payload = self._base(3, {"custom_id": button["custom_id"], "component_type": 2}, user_id, channel_id)
        payload["message"] = message
        self.standin.original[f"component:{payload['token']}"] = int(message["id"])
        return payload

    def select(self, on: Call, values: list[str], *, user_id: int = ALICE, channel_id: int = CHANNEL_ID) -> dict:
        """A choice in the first string select menu (type 3, component 3) of the message `on` created."""
        message = self.standin.messages[on.message_id]  # type: ignore[index]
        menu = next(c for c in _components(message) if c["type"] == 3)
        payload = self._base(
            3, {"custom_id": menu["custom_id"], "component_type": 3, "values": values}, user_id, channel_id
        )
        payload["message"] = message
        self.standin.original[f"component:{payload['token']}"] = int(message["id"])
        return payload

    def modal_submit(
        self, modal: Call, values: dict[str, str], *, user_id: int = ALICE, channel_id: int = CHANNEL_ID
    ) -> dict:
        """Submit (type 5) the modal the bot opened with callback `modal` (type 9), filling `values` by custom_id."""
        assert modal.payload["type"] == 9, f"not a modal response: {modal.payload}"
        data = modal.payload["data"]
        rows = []
        for row in data["components"]:
            inner = row.get("components") or [row["component"]]
            for component in inner:
                value = values.get(component["custom_id"], "")
                rows.append(
                    {"type": 1, "components": [{"type": 4, "custom_id": component["custom_id"], "value": value}]}
                )
        return self._base(5, {"custom_id": data["custom_id"], "components": rows}, user_id, channel_id)


def command_at(command: Any, names: list[str]) -> app_commands.Command:
    for name in names[1:]:
        command = command.get_command(name)
    return command


def _components(message: dict) -> list[dict]:
    return [c for row in message.get("components", []) for c in row.get("components", [])]
