"""The public web gallery over the registry: server-rendered pages (Starlette + Jinja2, plain CSS and a
few lines of script, no build) and a JSON API with the same data.

Only public, live styles ever appear: every read goes through the registry's visibility rule with no
user and no guild (`user_id=None, guild_id=None`). The gallery reads the registry through `registry/`
functions only and never imports torch or discord.

    python -m web --host 0.0.0.0 --port 8080          # on its own (STYLECODES_DATABASE_URL)
    STYLECODES_WEB_PORT=8080 python -m bot            # inside the bot's process (the embedded default)
"""

__all__ = ["WebServer", "create_app", "start_web_server"]


def __getattr__(name: str):
    # Imported on first use, so `web.config` (which the bot's settings read) stays light.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("WebServer", "start_web_server"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'web' has no attribute {name!r}")
