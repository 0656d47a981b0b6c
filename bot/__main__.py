"""`python -m bot`: migrate the registry, build the resources, and run the Discord bot.

    DISCORD_TOKEN=... python -m bot           # run; publishes the slash commands when they changed
    DISCORD_TOKEN=... python -m bot --sync    # publish them even if unchanged

Settings come from the environment or `.env` (see `bot/config.py` and docs/bot.md); `.env` is copied into
the environment first, so the variables other libraries read (`STYLECODES_V1_*`, `HF_HUB_OFFLINE`) work
from it too. A registry, Redis or Discord that cannot be reached, or invalid settings, end the start with a
message saying what to fix (exit status 2), not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import aiohttp
import discord
import yarl
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import registry
from bot.config import (
    Settings,
    StartupError,
    check_database,
    data_dir_unusable,
    error_text,
    load_settings,
    redis_unreachable,
)
from bot.dispatch import make_dispatcher
from bot.frontend.app import BotResources, create_bot
from bot.frontend.attachments import AttachmentPolicy
from bot.metrics import start_metrics_server
from bot.worker.models import preload_models

log = logging.getLogger("bot")

# What the bot needs in a channel: read it, post in it (and its threads), with embeds and images.
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)

MISSING_TOKEN_HELP = f"""\
DISCORD_TOKEN is not set, so the bot cannot log in to Discord.

To get a token:
  1. Open https://discord.com/developers/applications and click "New Application".
  2. In the "Bot" tab, click "Reset Token" and copy the token. Keep it secret: anyone holding it
     controls the bot.
  3. Privileged gateway intents: none are needed (the bot only uses slash commands, buttons and
     modals; it never reads message content or member lists). Leave them off.
  4. Invite the bot: in "OAuth2" > "URL Generator", tick the scopes `bot` and `applications.commands`
     and the bot permissions View Channels, Send Messages, Send Messages in Threads, Embed Links,
     Attach Files and Read Message History (permission integer {BOT_PERMISSIONS.value}); open the URL
     and pick your server. Or open this URL with APPLICATION_ID replaced by your application id (the
     "Application ID" on the application's "General Information" page in the developer portal):
     https://discord.com/oauth2/authorize?client_id=APPLICATION_ID&scope=bot+applications.commands&permissions={BOT_PERMISSIONS.value}
  5. Put the token in the environment or in a `.env` file next to where you run the bot:
         DISCORD_TOKEN=your-token
     then run `python -m bot`: it publishes the slash commands whenever they changed, and serves.

For a local test without GPU or downloads, add STYLECODES_MODEL_VERSION=0 (the tiny demo model).
See docs/bot.md for every setting."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the stylecodes Discord bot.")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="publish the slash commands even if they did not change since the last start "
        "(by default they are published only when they changed; Discord rate-limits it)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()  # `.env` into the environment first: STYLECODES_V1_*, HF_HUB_OFFLINE
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 2
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        print(MISSING_TOKEN_HELP, file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=logging.getLevelName(settings.log_level))
    try:
        asyncio.run(run(settings, sync=args.sync))
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 2
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN). Reset it in the developer portal and try again.")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def run(settings: Settings, *, sync: bool = False) -> None:
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    try:
        url = settings.resolved_database_url
    except OSError as exc:  # the SQLite folder cannot be created
        raise data_dir_unusable(settings.data_dir, exc) from None
    database = registry.create_engine(url)
    dispatcher = None
    metrics_server = None
    gallery = None
    try:
        await check_database(url, database)  # unreachable: a message, not a migration traceback
        try:
            await registry.upgrade_to_head(url)  # `alembic upgrade head`: the schema is always current
        except registry.MissingExtensionError as exc:  # PostgreSQL without pgvector / pg_trgm
            raise StartupError(str(exc)) from None
        session_factory = registry.create_session_factory(database)
        gallery = await _start_gallery(settings, session_factory)
        dispatcher = make_dispatcher(settings, session_factory=session_factory)
        try:
            await dispatcher.start()
        except (RedisError, OSError) as exc:
            if not settings.redis_url:
                raise
            raise redis_unreachable(settings.redis_url, exc) from None
        async with aiohttp.ClientSession() as http:
            policy = AttachmentPolicy(max_bytes=settings.max_attachment_bytes)
            bot = create_bot(BotResources(settings, session_factory, dispatcher, http, policy))
            bot.sync_commands_on_start = "always" if sync else "changed"
            if settings.metrics_port is not None:
                metrics_server = await start_metrics_server(settings.metrics_port, health=bot.health)
            async with bot:
                try:
                    await bot.login(settings.discord_token.get_secret_value())  # type: ignore[union-attr]
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    raise StartupError(
                        f"Could not reach Discord's API at {settings.discord_api_base}: {error_text(exc)}. Check "
                        "this host's internet connection, DNS and firewall (outgoing HTTPS to discord.com), or "
                        "STYLECODES_DISCORD_API_BASE if the bot goes through a proxy."
                    ) from None
                # Only after a good login: a refused token must not wait for a 7.5 GB download to end.
                warm_ups = [
                    asyncio.create_task(_warm_up(dispatcher, settings)),
                    asyncio.create_task(_warm_similar_index(session_factory)),
                ]
                try:
                    await bot.connect()
                finally:
                    for task in warm_ups:
                        task.cancel()
    finally:
        if dispatcher is not None:
            await dispatcher.close()
        if metrics_server is not None:
            await metrics_server.cleanup()
        if gallery is not None:
            await gallery.stop()
        await database.dispose()


async def _start_gallery(settings: Settings, session_factory: async_sessionmaker[AsyncSession]):
    """The public web gallery in this process (STYLECODES_WEB_PORT), or None when it is off. A port that
    cannot be had is logged and the bot runs on without the gallery: Discord is its first job."""
    if settings.web_port is None:
        return None
    from web import start_web_server

    try:
        return await start_web_server(
            session_factory,
            host=settings.web_host,
            port=settings.web_port,
            base_url=settings.web_base_url,
            rate_limit=settings.web_rate_limit,
        )
    except OSError as exc:
        log.error(
            "event=web_failed: the gallery could not listen on %s:%d (%s). The bot runs without it; set "
            "STYLECODES_WEB_PORT to a free port, or empty to turn the gallery off.",
            settings.web_host,
            settings.web_port,
            error_text(exc),
        )
        return None


async def _warm_up(dispatcher: object, settings: Settings) -> None:
    """Embedded mode: load the served models now, so the first user does not wait, and say once at startup
    whether their images are safety-checked. (Redis mode: each worker loads and reports its models.)"""
    models = getattr(dispatcher, "models", None)
    if models is None:
        return
    try:
        await asyncio.to_thread(preload_models, models, settings.versions_served)
    except StartupError as exc:
        log.error("%s The bot keeps running; the next job of that version tries to load it again.", exc)


async def _warm_similar_index(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """Build the registry's similar-styles index now (seconds at 1M styles, off the event loop), so the
    first /stylecode similar does not pay for it."""
    try:
        async with session_factory() as session:
            count = await registry.warm_similar_index(session)
    except Exception:
        log.warning("event=similar_index_failed: the first /stylecode similar builds it instead", exc_info=True)
        return
    log.info("event=similar_index_ready revisions=%d", count)


if __name__ == "__main__":
    sys.exit(main())
