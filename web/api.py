"""The JSON API: the pages' data, with cursor pagination, ETags and the same visibility.

    GET /api/styles?sort=new|popular|trending|favourites&tag=&author=&q=&cursor=&limit=
    GET /api/styles/<name>
    GET /api/autocomplete?q=<prefix>

A private, guild-only, deleted or missing style is the same 404, so the API never tells whether one exists.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

import registry
from registry.browse import PAGE_MAX, SORTS

from . import data
from .http import cached_response, choice_param, int_param, json_bytes, text_param
from .pages import DISCORD_ID_MAX


def as_json(request: Request, payload) -> Response:
    return cached_response(request, json_bytes(payload), "application/json")


async def styles(request: Request) -> Response:
    sort = choice_param(request, "sort", SORTS, default="new")
    tag = text_param(request, "tag", maximum=100)
    if tag is not None:
        tag = registry.names.normalise_tags([tag]) or None  # InvalidNameError: a 400 with the rule
    author_id = int_param(request, "author", default=None, low=0, high=DISCORD_ID_MAX)
    query = text_param(request, "q")
    cursor = text_param(request, "cursor")
    limit = int_param(request, "limit", default=data.PAGE_SIZE, low=1, high=PAGE_MAX)
    async with request.app.state.sessions() as session:
        page = await data.listing(
            session, sort=sort, tag=tag, author_id=author_id, query=query, cursor=cursor, limit=limit
        )
    return as_json(request, page)


async def style(request: Request) -> Response:
    async with request.app.state.sessions() as session:
        detail = await data.style_detail(session, request.path_params["name"])
    return as_json(request, detail)


async def autocomplete(request: Request) -> Response:
    prefix = text_param(request, "q", default="", maximum=64) or ""
    limit = int_param(request, "limit", default=10, low=1, high=registry.AUTOCOMPLETE_MAX)
    async with request.app.state.sessions() as session:
        names = await registry.autocomplete_names(session, prefix, limit=limit, **data.PUBLIC)
    return as_json(request, {"names": names})
