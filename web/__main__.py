"""`python -m web`: the public gallery on its own, over the registry the bot uses.

    python -m web                           # STYLECODES_WEB_HOST / STYLECODES_WEB_PORT, default 127.0.0.1:8080
    python -m web --host 0.0.0.0 --port 8080

The database comes from the bot's setting, `STYLECODES_DATABASE_URL` (else the SQLite file under
`STYLECODES_DATA_DIR`, default ./data). The gallery only reads: it never migrates. A registry that is
unreachable or not migrated yet ends the start with a message saying what to do (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pydantic import ValidationError

import registry
from registry.config import database_url_from_env

from .config import WebSettings
from .server import start_web_server

log = logging.getLogger("web")


class StartupError(Exception):
    """Something the operator must fix; `str()` says what and how."""


def parse_args(argv: list[str] | None, settings: WebSettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m web", description="Serve the public style gallery.")
    parser.add_argument("--host", default=settings.web_host, help=f"address to listen on (default {settings.web_host})")
    parser.add_argument("--port", type=int, default=settings.web_port, help=f"port (default {settings.web_port})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from dotenv import load_dotenv

    load_dotenv(".env", override=False)  # the bot's .env: STYLECODES_DATABASE_URL and friends
    try:
        settings = WebSettings()
    except ValidationError as exc:
        problems = "\n".join(f"  STYLECODES_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        print(f"Invalid settings (environment or .env):\n{problems}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings, args.host, args.port))
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


async def serve(settings: WebSettings, host: str, port: int) -> None:
    url = database_url_from_env()
    engine = registry.create_engine(url)
    try:
        await check_schema(url, engine)
        sessions = registry.create_session_factory(engine)
        try:
            server = await start_web_server(
                sessions, host=host, port=port, base_url=settings.web_base_url, rate_limit=settings.web_rate_limit
            )
        except OSError as exc:
            raise StartupError(
                f"Could not listen on {host}:{port}: {exc.strerror or exc}. Pick another port (--port or "
                "STYLECODES_WEB_PORT) or stop what uses it."
            ) from None
        print(f"Gallery at http://{host}:{server.port}/ (Ctrl-C stops it)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
    finally:
        await engine.dispose()


async def check_schema(url: str, engine) -> None:
    """The registry answers and is migrated to head; else a `StartupError` saying what to do."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import SQLAlchemyError

    from registry.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    except (OSError, SQLAlchemyError) as exc:
        raise StartupError(
            f"Could not open the registry database ({type(exc).__name__}: {str(exc).splitlines()[0]}). Check "
            "STYLECODES_DATABASE_URL (or STYLECODES_DATA_DIR for the SQLite file) and that the server is running."
        ) from None
    if current != head:
        raise StartupError(
            f"The registry database is at migration {current or 'none'}, not {head}. Start the bot once "
            "(`python -m bot` migrates at start) or run `alembic upgrade head`, then start the gallery again."
        )


if __name__ == "__main__":
    sys.exit(main())
