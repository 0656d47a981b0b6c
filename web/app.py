"""The gallery's Starlette application: routes, rendering, errors, rate limits.

Addresses: `/` (home), `/search?q=`, `/tags/<tag>`, `/styles/<name>`, `/users/<id>`, previews under
`/styles/<name>/preview/<n>.webp` (and `/thumb.webp`), and the JSON API under `/api/` (api.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import registry

from . import api, pages
from .config import DEFAULT_RATE_LIMIT
from .http import BadRequest, NotFound, RateLimitMiddleware
from .previews import ThumbnailCache

log = logging.getLogger("web")
HERE = Path(__file__).resolve().parent


def create_app(
    sessions: async_sessionmaker[AsyncSession], *, base_url: str | None = None, rate_limit: str = DEFAULT_RATE_LIMIT
) -> Starlette:
    """The gallery over the registry `sessions` opens. `base_url`: the public address for absolute links
    (OpenGraph tags); None takes it from each request."""
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped: names and descriptions render as text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    routes = [
        Route("/", pages.home),
        Route("/search", pages.search),
        Route("/tags/{tag}", pages.tag),
        Route("/styles/{name}", pages.style),
        Route("/styles/{name}/preview/{number}.webp", pages.preview),
        Route("/styles/{name}/preview/{number}/thumb.webp", pages.thumbnail),
        Route("/users/{user_id}", pages.user),
        Route("/api/styles", api.styles),
        Route("/api/styles/{name}", api.style),
        Route("/api/autocomplete", api.autocomplete),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: bad_request,
            NotFound: not_found,
            registry.RegistryError: registry_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
    app.state.sessions = sessions
    app.state.templates = templates
    app.state.base_url = base_url
    app.state.thumbnails = ThumbnailCache()
    app.add_middleware(RateLimitMiddleware, rate=rate_limit, on_limited=rate_limited)
    return app


async def health(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain", headers={"Cache-Control": "no-store"})


# --- errors: a page for people, JSON for the API; never a traceback ------------------------------------


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, status: int, title: str, message: str, suggestions=()) -> Response:
    if is_api(request):
        body = {"error": title.lower().replace(" ", "_"), "message": message}
        if suggestions:
            body["suggestions"] = list(suggestions)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    html = pages.render(request, "error.html", status=status, title=title, message=message, suggestions=suggestions)
    return Response(html, status_code=status, media_type="text/html", headers={"Cache-Control": "no-store"})


async def bad_request(request: Request, exc: Exception) -> Response:
    return error_response(request, 400, "Bad request", str(exc))


async def not_found(request: Request, exc: NotFound) -> Response:
    return error_response(request, 404, "Not found", str(exc), exc.suggestions)


async def registry_error(request: Request, exc: Exception) -> Response:
    # Anything the registry refuses that reached here is about the request's parameters (a cursor, a
    # sort, a tag, a limit); refusals about a style's existence are turned into NotFound before.
    return error_response(request, 400, "Bad request", str(exc))


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return error_response(request, 404, "Not found", "There is nothing at this address.")
    if exc.status_code == 405:
        return error_response(request, 405, "Method not allowed", "The gallery is read-only: use GET.")
    return error_response(request, exc.status_code, "Error", str(exc.detail))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("event=web_error path=%s", request.url.path)
    return error_response(request, 500, "Server error", "Something went wrong on our side; try again in a moment.")


def rate_limited(request: Request, retry_after: int) -> Response:
    return error_response(
        request, 429, "Too many requests", f"Too many requests from your address; try again in {retry_after} s."
    )
