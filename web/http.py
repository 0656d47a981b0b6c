"""HTTP plumbing shared by the pages and the API: conditional responses (ETag, Cache-Control), per-IP
rate limits, and query parameters checked with a 400 that says what was wrong."""

from __future__ import annotations

import hashlib
import json
import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

PAGE_MAX_AGE = 60  # seconds: a style made private leaves shared caches within a minute
PREVIEW_MAX_AGE = 3600
QUERY_MAX = 200  # characters of a search query
UNLIMITED_PREFIXES = ("/static/", "/healthz")


class BadRequest(Exception):
    """A query parameter or path part the gallery cannot use; `str()` says what and how to fix it."""


class NotFound(Exception):
    """Nothing public at this address; `suggestions` are public names close to the one asked for."""

    def __init__(self, message: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.suggestions = suggestions or []


def cached_response(
    request: Request, body: bytes, media_type: str, *, max_age: int = PAGE_MAX_AGE, status_code: int = 200
) -> Response:
    """`body` with a strong ETag and public caching; 304 without a body when the client has it already."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}", "Vary": "Accept-Encoding"}
    if status_code == 200 and etag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    return Response(body, status_code=status_code, media_type=media_type, headers=headers)


def _if_none_match(request: Request) -> set[str]:
    value = request.headers.get("if-none-match", "")
    return {tag.strip().removeprefix("W/") for tag in value.split(",") if tag.strip()}


def json_bytes(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()


# --- query parameters ------------------------------------------------------------------------------------


def text_param(request: Request, name: str, *, default: str | None = None, maximum: int = QUERY_MAX) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    if len(value) > maximum:
        raise BadRequest(f"`{name}` has {len(value)} characters; the limit is {maximum}. Shorten it.")
    if "\x00" in value:
        raise BadRequest(f"`{name}` contains a NUL character; remove it.")
    return value


def int_param(request: Request, name: str, *, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return parse_int(raw, name, low=low, high=high)


def parse_int(raw: str, name: str, *, low: int, high: int) -> int:
    """A whole number in low..high written in ASCII digits, else `BadRequest` saying so."""
    text = raw.strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(max(abs(low), abs(high)))) + 1:
        raise BadRequest(f"`{name}` must be a whole number from {low} to {high}, got {_clip(raw)!r}.")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be a whole number from {low} to {high}, got {value}.")
    return value


def choice_param(request: Request, name: str, choices: tuple[str, ...], *, default: str) -> str:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise BadRequest(f"`{name}` must be one of {', '.join(choices)}, got {_clip(value)!r}.")
    return value


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- rate limits -----------------------------------------------------------------------------------------


class RateLimitMiddleware:
    """At most `rate` requests per client IP (a moving window, `limits`); over it, 429 with Retry-After.

    Per process (memory storage): several gallery processes each allow `rate`. Behind a reverse proxy,
    run uvicorn with `--proxy-headers` (and `--forwarded-allow-ips`) so the client's address is the real one.
    """

    def __init__(self, app: ASGIApp, rate: str, on_limited) -> None:
        self.app = app
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.on_limited = on_limited  # (request, retry_after_s) -> Response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNLIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        if await self.limiter.hit(self.item, client):
            await self.app(scope, receive, send)
            return
        reset, _ = await self.limiter.get_window_stats(self.item, client)
        retry_after = max(1, math.ceil(reset - time.time()))
        response = self.on_limited(Request(scope), retry_after)
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)
