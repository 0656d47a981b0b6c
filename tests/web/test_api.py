"""The JSON API: same data as the pages, cursor pagination, and bad input answered with a 400 or 404."""

from __future__ import annotations

import pytest

from tests.web.conftest import BULK, Gallery


def get(gallery: Gallery, path: str):
    with gallery.client() as client:
        return client.get(path)


def test_cursor_pagination_visits_every_style_once(gallery: Gallery) -> None:
    for sort in ("new", "popular", "favourites"):
        seen, cursor, pages = [], None, 0
        while True:
            more = f"&cursor={cursor}" if cursor else ""
            response = get(gallery, f"/api/styles?tag=bulk&sort={sort}&limit=7{more}")
            assert response.status_code == 200
            body = response.json()
            seen += [item["name"] for item in body["items"]]
            cursor, pages = body["next_cursor"], pages + 1
            if cursor is None:
                break
        assert sorted(seen) == [f"bulk-{i:02d}" for i in range(BULK)] and pages == 5, sort
    # Search pages through its ranked matches with the same kind of cursor.
    first = get(gallery, "/api/styles?q=bulk&limit=20").json()
    rest = get(gallery, f"/api/styles?q=bulk&limit=20&cursor={first['next_cursor']}").json()
    names = [i["name"] for i in first["items"] + rest["items"]]
    assert len(names) == len(set(names)) == BULK and rest["next_cursor"] is None


def test_style_detail_matches_the_page(gallery: Gallery) -> None:
    detail = get(gallery, "/api/styles/neon-noir").json()
    assert detail["code"] == "ABCDEFGHIJKLMNOPQRST1" and detail["revision"] == 2
    assert [r["number"] for r in detail["revisions"]] == [2, 1]
    assert [f["name"] for f in detail["forks"]] == ["neon-fork"]
    assert sum(day["count"] for day in detail["uses_per_day"]) == 3 and len(detail["uses_per_day"]) == 30
    assert detail["preview_url"] == "/styles/neon-noir/preview/2.webp"
    assert all(s["name"] != "neon-noir" for s in detail["similar"])
    assert detail["owner"]["id"] == "7001"  # ids as strings: JSON numbers lose precision past 2^53
    page = get(gallery, "/styles/neon-noir").text
    assert all(f'href="/styles/{s["name"]}"' in page for s in detail["similar"])


BAD = [
    # (path, status, words of the message)
    ("/search?q=noir&page=0", 400, "`page` must be a whole number from 1"),
    ("/search?q=noir&page=abc", 400, "`page` must be a whole number"),
    ("/search?q=noir&page=999999999999999999999999", 400, "`page` must be a whole number"),
    ("/search?q=noir&page=9", 400, "from 1 to 8"),
    ("/search?q=" + "a" * 201, 400, "the limit is 200"),
    ("/search?q=a%00b", 400, "NUL"),
    ("/api/styles?cursor=abc", 400, "cursor is damaged"),
    ("/api/styles?cursor=" + "A" * 300, 400, "`cursor` has 300 characters; the limit is 200"),
    ("/api/styles?sort=popular&cursor=WyJuZXciLG51bGwsMV0", 400, "belongs to another listing"),
    ("/api/styles?q=bulk&cursor=WyJuZXciLG51bGwsMV0", 400, "damaged"),
    ("/api/styles?sort=random", 400, "`sort` must be one of new, popular, trending, favourites"),
    ("/api/styles?sort=popular%27%20OR%201%3D1", 400, "`sort` must be one of"),
    ("/api/styles?limit=0", 400, "`limit` must be a whole number from 1 to 100"),
    ("/api/styles?limit=101", 400, "`limit` must be a whole number from 1 to 100"),
    ("/api/styles?limit=1e3", 400, "`limit` must be a whole number"),
    ("/api/styles?author=abc", 400, "`author` must be a whole number"),
    ("/api/styles?author=99999999999999999999", 400, "`author` must be a whole number"),
    ("/api/styles?tag=%25", 400, "is not valid"),
    ("/api/autocomplete?limit=26", 400, "`limit`"),
    ("/tags/%3Cscript%3E", 400, "is not valid"),
    ("/tags/a", 400, "is not valid"),
    ("/tags/noir?sort=name", 400, "`sort` must be one of"),
    ("/users/abc", 400, "`user id` must be a whole number"),
    ("/users/-5", 400, "`user id` must be a whole number"),
    ("/styles/no-such-style", 404, "No public style is named `no-such-style`"),
    ("/styles/%3Cscript%3E", 404, "No public style is named"),
    ("/styles/neon-nior", 404, "Did you mean"),  # a typo: public names close to it
    ("/styles/latest", 404, "No public style"),
    ("/styles/neon-noir/preview/0.webp", 404, "no such revision"),
    ("/styles/neon-noir/preview/3.webp", 404, "has no revision 3"),
    ("/styles/neon-noir/preview/99999999999999999999.webp", 404, "no such revision"),
    ("/styles/neon-fork/preview/1.webp", 404, "no preview yet"),
    ("/api/styles/no-such-style", 404, "No public style"),
    ("/nothing/here", 404, "nothing at this address"),
]


@pytest.mark.parametrize(("path", "status", "words"), BAD, ids=[b[0][:50] for b in BAD])
def test_bad_input_is_a_400_or_404_with_a_message(gallery: Gallery, path: str, status: int, words: str) -> None:
    response = get(gallery, path)
    assert response.status_code == status, response.text[:300]
    if "/api/" in path:
        text = response.json()["message"] + str(response.json().get("suggestions", ""))
    else:
        text = response.text
    assert words.lower() in text.lower().replace("&#96;", "`").replace("&#39;", "'"), text[:500]


@pytest.mark.parametrize("query", ["%", "_", "%%_%", "*", '"', "neo*", "a:*", "noir & !neon | x", "NEAR(a b)", "'; --",
                                   "\\", "(", "title:noir", "^noir", "\u202e"])  # fmt: skip
def test_search_syntax_is_plain_text(gallery: Gallery, query: str) -> None:
    """LIKE wildcards and full-text operators are words to look for, never syntax: no error, no match-all."""
    for path in ("/search?q=", "/api/styles?q="):
        response = get(gallery, path + query.replace("%", "%25").replace("&", "%26").replace("#", "%23"))
        assert response.status_code == 200, (query, response.text[:300])
    items = get(gallery, "/api/styles?limit=100&q=" + query.replace("%", "%25").replace("&", "%26")).json()["items"]
    assert len(items) < BULK  # a wildcard never matches everything
