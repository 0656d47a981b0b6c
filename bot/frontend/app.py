"""The Discord client: loads the feature cogs, registers the persistent buttons, reports errors.

Everything with a life of its own (database, dispatcher, HTTP session) is created by the caller
(`bot.__main__`, or a test) and handed in as `BotResources`; the bot only uses them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.dispatch.base import Dispatcher
from bot.frontend.actions.imagine import Generations
from bot.frontend.actions.restarts import Restarts
from bot.frontend.actions.styles import StyleActions
from bot.frontend.attachments import AttachmentPolicy
from bot.frontend.errors import report_error
from bot.frontend.views import DYNAMIC_ITEMS

log = logging.getLogger(__name__)

# Loaded in this order by setup_hook; one cog per feature.
EXTENSIONS: tuple[str, ...] = (
    "bot.frontend.cogs.styles",  # owns the /stylecode group
    "bot.frontend.cogs.encode",  # adds /stylecode encode to it
    "bot.frontend.cogs.imagine",
    "bot.frontend.cogs.settings",
)


@dataclass
class BotResources:
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    dispatcher: Dispatcher
    http_session: aiohttp.ClientSession  # attachment downloads from Discord's CDN
    attachment_policy: AttachmentPolicy = field(default_factory=AttachmentPolicy)


class AckGate:
    """Acknowledgements first: work that follows an acknowledgement waits while other commands still
    wait for theirs, so a burst of commands is deferred before any of them touches the database.

    Discord fails an interaction not acknowledged within 3 s; everything after the "thinking..." can wait.
    """

    MAX_WAIT_S = 0.5  # under a steady stream, never hold follow-up work back longer than this

    def __init__(self) -> None:
        self._waiting = 0
        self._clear = asyncio.Event()
        self._clear.set()

    def arrived(self, interaction: discord.Interaction) -> None:
        interaction.extras["awaiting_ack"] = True
        self._waiting += 1
        self._clear.clear()

    def acknowledged(self, interaction: discord.Interaction) -> None:
        if interaction.extras.pop("awaiting_ack", False):
            self._waiting -= 1
            if self._waiting == 0:
                self._clear.set()

    @property
    def waiting(self) -> int:
        """Commands received and not yet acknowledged."""
        return self._waiting

    async def wait_turn(self) -> None:
        try:
            await asyncio.wait_for(self._clear.wait(), self.MAX_WAIT_S)
        except TimeoutError:
            pass


class StylecodesTree(app_commands.CommandTree):
    def __init__(self, client: discord.Client, **options: Any) -> None:
        super().__init__(client, **options)
        self.ack_gate = AckGate()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.type is discord.InteractionType.application_command:
            self.ack_gate.arrived(interaction)
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


class StylecodesBot(commands.Bot):
    def __init__(self, resources: BotResources, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channel and permission data for interactions; no message content needed
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=StylecodesTree,
            help_command=None,
            **options,
        )
        self.resources = resources
        # "changed": sync when the command payload differs from the last one synced (python -m bot);
        # "always": `python -m bot --sync`; "never": tests (Discord rate-limits command updates).
        self.sync_commands_on_start: Literal["never", "changed", "always"] = "never"
        self._background: set[asyncio.Task[Any]] = set()
        # What commands and buttons do; the views reach them through the bot, so they import no action.
        self.styles = StyleActions(self)
        self.generations = Generations(self)

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        # Buttons and menus on old messages keep working after a restart: their custom_ids carry their state.
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if self.sync_commands_on_start != "never":
            await self._sync_commands(force=self.sync_commands_on_start == "always")
        self.spawn(Restarts(self).recover(), name="recover-unfinished-jobs")

    async def _sync_commands(self, *, force: bool) -> None:
        """Publish the slash commands, unless the same payload was already published from this data dir.

        Discord limits command updates per day, so a restart that changes nothing must not sync.
        """
        guild_id = self.settings.dev_guild_id
        guild = discord.Object(guild_id) if guild_id is not None else None
        if guild is not None:  # guild commands update at once; global ones can take an hour
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        fingerprint = hashlib.sha256(json.dumps([self.application_id, guild_id, payload], sort_keys=True).encode())
        marker = self.settings.data_dir / "commands-synced.sha256"
        if not force and marker.is_file() and marker.read_text().strip() == fingerprint.hexdigest():
            log.info("event=commands_unchanged count=%d guild=%s", len(payload), guild_id)
            return
        synced = await self.tree.sync(guild=guild)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint.hexdigest())
        log.info("event=commands_synced count=%d guild=%s", len(synced), guild_id)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run `coroutine` in the background, keeping a reference until it ends; errors are logged."""
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def wait_idle(self) -> None:
        """Wait for the background work (job tracking) to finish: tests and graceful shutdown."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*list(self._background), return_exceptions=True)
        await super().close()

    async def on_app_command_completion(self, interaction: discord.Interaction, command: Any) -> None:
        self.ack_gate.acknowledged(interaction)  # commands that answered without deferring

    @property
    def ack_gate(self) -> AckGate:
        return self.tree.ack_gate  # type: ignore[attr-defined]

    async def on_ready(self) -> None:
        log.info("event=ready user=%s guilds=%d", self.user, len(self.guilds))

    def health(self) -> dict[str, Any]:
        """/healthz: ok once the gateway said READY, until the bot closes (503 otherwise)."""
        ready, closed = self.is_ready(), self.is_closed()
        state: dict[str, Any] = {
            "ok": ready and not closed,
            "ready": ready,
            "closed": closed,
            "user": None if self.user is None else str(self.user),
            "guilds": len(self.guilds),
            "shard_count": self.shard_count,
            "latency_ms": round(self.latency * 1000) if math.isfinite(self.latency) else None,
            "background_tasks": len(self._background),  # jobs being followed, restart recovery
        }
        models = getattr(self.resources.dispatcher, "models", None)  # the embedded worker's model cache
        if models is not None:
            state["models_loaded"] = list(models.loaded_versions)
        return state


class ShardedStylecodesBot(StylecodesBot, commands.AutoShardedBot):
    """The same bot over several gateway connections (STYLECODES_SHARD_COUNT != 0)."""


def create_bot(resources: BotResources) -> StylecodesBot:
    shards = resources.settings.shard_count
    if shards == 0:
        return StylecodesBot(resources)
    if shards < 0:
        return ShardedStylecodesBot(resources)  # Discord recommends the count
    shard_ids = resources.settings.shard_ids or None  # None = every shard, in this one process
    return ShardedStylecodesBot(resources, shard_count=shards, shard_ids=shard_ids)
