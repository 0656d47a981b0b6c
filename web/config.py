"""Gallery settings, from the environment (and `.env`): the same `STYLECODES_*` names the bot reads.

| variable | default | meaning |
| --- | --- | --- |
| `STYLECODES_WEB_PORT` | 8080 | port of the gallery; in the bot, empty or 0 turns the gallery off |
| `STYLECODES_WEB_HOST` | 127.0.0.1 | address to listen on (0.0.0.0: every interface) |
| `STYLECODES_WEB_BASE_URL` | http://localhost:PORT | the public address, for links in Discord and OpenGraph |
| `STYLECODES_WEB_RATE_LIMIT` | 300/minute | requests per client IP (moving window), e.g. `60/minute`, `10/second` |
"""

from __future__ import annotations

import urllib.parse

from limits import parse
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_RATE_LIMIT = "300/minute"


def check_rate_limit(value: str) -> str:
    """A `limits` rate string (`300/minute`); a ValueError that says how to write one otherwise."""
    try:
        parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit; write e.g. 300/minute, 10/second or 1000/hour") from None
    return value


def check_base_url(value: str | None) -> str | None:
    """An http(s) address without a trailing slash, or None."""
    if value is None or not value.strip():
        return None
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not a web address; write e.g. https://styles.example.org")
    return value.strip().rstrip("/")


def default_base_url(port: int) -> str:
    return f"http://localhost:{port}"


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STYLECODES_", env_file=".env", extra="ignore")

    web_host: str = DEFAULT_HOST
    web_port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    web_base_url: str | None = None
    web_rate_limit: str = DEFAULT_RATE_LIMIT

    _check_rate = field_validator("web_rate_limit")(classmethod(lambda cls, v: check_rate_limit(v)))
    _check_base = field_validator("web_base_url")(classmethod(lambda cls, v: check_base_url(v)))
