"""Where the registry database lives: the same settings the bot reads (``STYLECODES_*``)."""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL_ENV = "STYLECODES_DATABASE_URL"
DATA_DIR_ENV = "STYLECODES_DATA_DIR"
SQLITE_FILENAME = "stylecodes.db"


def default_database_url(data_dir: Path | str) -> str:
    """The default: a SQLite file under `data_dir` (created if missing)."""
    path = Path(data_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{path / SQLITE_FILENAME}"


def database_url_from_env() -> str:
    """``STYLECODES_DATABASE_URL`` if set, else SQLite under ``STYLECODES_DATA_DIR`` (default ``./data``)."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    return default_database_url(os.environ.get(DATA_DIR_ENV, "data"))
