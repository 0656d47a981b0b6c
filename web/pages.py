"""The HTML pages (server-rendered with Jinja2) and the preview images."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

import registry
from registry.browse import SEARCH_CANDIDATES, SORTS

from . import data
from .http import PREVIEW_MAX_AGE, BadRequest, NotFound, cached_response, choice_param, parse_int, text_param

DISCORD_ID_MAX = 2**63 - 1
SEARCH_PAGES = SEARCH_CANDIDATES // data.PAGE_SIZE  # search ranks the newest 200 matches


def base_url(request: Request) -> str:
    return request.app.state.base_url or str(request.base_url).rstrip("/")


def render(request: Request, template: str, **context) -> bytes:
    page = request.app.state.templates.get_template(template)
    return page.render(base_url=base_url(request), path=request.url.path, **context).encode()


def html(request: Request, template: str, **context) -> Response:
    return cached_response(request, render(request, template, **context), "text/html; charset=utf-8")


async def home(request: Request) -> Response:
    async with request.app.state.sessions() as session:
        rows = await data.home(session)
    return html(request, "home.html", rows=rows)


async def search(request: Request) -> Response:
    query = (text_param(request, "q", default="") or "").strip()
    page = parse_int(request.query_params.get("page") or "1", "page", low=1, high=SEARCH_PAGES)
    results: list[dict] = []
    more = False
    if query:
        async with request.app.state.sessions() as session:
            found = await registry.search(
                session, query, limit=data.PAGE_SIZE + 1, offset=(page - 1) * data.PAGE_SIZE, **data.PUBLIC
            )
            results = await data.cards(session, found[: data.PAGE_SIZE])
        more = len(found) > data.PAGE_SIZE and page < SEARCH_PAGES
    return html(request, "search.html", query=query, results=results, page=page, more=more)


async def tag(request: Request) -> Response:
    raw = request.path_params["tag"]
    try:
        name = registry.names.normalise_tags([raw])
    except registry.RegistryError as exc:
        raise BadRequest(str(exc)) from None
    if not name:
        raise BadRequest("A tag page needs a tag, e.g. /tags/watercolor.")
    sort = choice_param(request, "sort", SORTS, default="popular")
    cursor = text_param(request, "cursor")
    async with request.app.state.sessions() as session:
        page = await data.listing(session, sort=sort, tag=name, cursor=cursor)
    return html(request, "tag.html", tag=name, sort=sort, sorts=SORTS, page=page)


async def style(request: Request) -> Response:
    async with request.app.state.sessions() as session:
        detail = await data.style_detail(session, request.path_params["name"])
    return html(request, "style.html", style=detail)


async def user(request: Request) -> Response:
    user_id = parse_int(request.path_params["user_id"], "user id", low=0, high=DISCORD_ID_MAX)
    cursor = text_param(request, "cursor")
    async with request.app.state.sessions() as session:
        author = await data.author(session, user_id, cursor)
    return html(request, "user.html", author=author)


def _revision_number(request: Request) -> int:
    try:
        return parse_int(request.path_params["number"], "revision", low=1, high=registry.names.INT32_MAX)
    except BadRequest:
        raise NotFound("There is no such revision.") from None


async def preview(request: Request) -> Response:
    number = _revision_number(request)
    async with request.app.state.sessions() as session:
        revision = await data.public_revision(session, request.path_params["name"], number)
        webp = await registry.get_revision_preview(session, revision.id)
    if webp is None:
        raise NotFound(f"Revision {number} has no preview yet.")
    return cached_response(request, webp, "image/webp", max_age=PREVIEW_MAX_AGE)


async def thumbnail(request: Request) -> Response:
    number = _revision_number(request)
    async with request.app.state.sessions() as session:
        revision = await data.public_revision(session, request.path_params["name"], number)

        async def full() -> bytes | None:
            return await registry.get_revision_preview(session, revision.id)

        thumb = await request.app.state.thumbnails.get(revision.id, full)
    if thumb is None:
        raise NotFound(f"Revision {number} has no preview yet.")
    return cached_response(request, thumb, "image/webp", max_age=PREVIEW_MAX_AGE)
