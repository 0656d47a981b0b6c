"""`python -m bot`: migrate the registry, build the resources, and run the Discord bot.

    DISCORD_TOKEN=... python -m bot           # run; publishes the slash commands when they changed
    DISCORD_TOKEN=... python -m bot --sync    # publish them even if unchanged

Settings come from the environment or `.env` (see `bot/config.py` and docs/bot.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import aiohttp
import discord
import yarl
from pydantic import ValidationError

from bot.config import Settings

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
     and pick your server. Or open, with your application id:
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
        settings = Settings()
    except ValidationError as exc:
        print(f"Invalid settings (environment or .env):\n{exc}", file=sys.stderr)
        return 2
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        print(MISSING_TOKEN_HELP, file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=logging.getLevelName(settings.log_level))
    try:
        asyncio.run(run(settings, sync=args.sync))
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN). Reset it in the developer portal and try again.")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def run(settings: Settings, *, sync: bool = False) -> None:
    import registry
    from bot.app import BotResources, create_bot
    from bot.attachments import AttachmentPolicy
    from bot.dispatch import make_dispatcher

    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    url = settings.resolved_database_url
    await registry.upgrade_to_head(url)  # `alembic upgrade head`: the schema is always current
    database = registry.create_engine(url)
    session_factory = registry.create_session_factory(database)
    dispatcher = make_dispatcher(settings, session_factory=session_factory)
    await dispatcher.start()
    metrics_server = None
    if settings.metrics_port is not None:
        from bot.metrics import start_metrics_server

        metrics_server = await start_metrics_server(settings.metrics_port)
    try:
        async with aiohttp.ClientSession() as http:
            policy = AttachmentPolicy(max_bytes=settings.max_attachment_bytes)
            bot = create_bot(BotResources(settings, session_factory, dispatcher, http, policy))
            bot.sync_commands_on_start = "always" if sync else "changed"
            warm_up = asyncio.create_task(_warm_up(dispatcher, settings))
            async with bot:
                await bot.start(settings.discord_token.get_secret_value())  # type: ignore[union-attr]
            warm_up.cancel()
    finally:
        await dispatcher.close()
        if metrics_server is not None:
            await metrics_server.cleanup()
        await database.dispose()


async def _warm_up(dispatcher: object, settings: Settings) -> None:
    """Embedded mode: load the default model now, so the first user does not wait, and say at startup
    whether its images are safety-checked. (Redis mode: the workers load and report their models.)"""
    models = getattr(dispatcher, "models", None)
    if models is None:
        return
    try:
        engine = await asyncio.to_thread(models.get, settings.model_version)
    except Exception:
        log.exception("could not load model version %d; /imagine will fail until it loads", settings.model_version)
        return
    log.info("event=model_ready version=%d safety_checker=%s", settings.model_version, engine.has_safety_checker)
    if not engine.has_safety_checker:
        log.warning(
            "model version %d has no safety checker: generated images are not screened for NSFW content",
            settings.model_version,
        )


if __name__ == "__main__":
    sys.exit(main())
