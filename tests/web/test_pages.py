"""The gallery over real HTTP: pages, escaping, OpenGraph, previews, caching and the visibility rule."""

from __future__ import annotations

import html
import re

from tests.web.conftest import ALICE, BULK, CODE, NASTY, Gallery


def get(gallery: Gallery, path: str, **headers):
    with gallery.client() as client:
        return client.get(path, headers=headers)


def names_in(page: str) -> set[str]:
    """Style names the page links to."""
    return set(re.findall(r'href="/styles/([a-z0-9-]+)"', page))


def test_home_shows_trending_popular_and_new_with_thumbnails(gallery: Gallery) -> None:
    response = get(gallery, "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for heading in ("Trending", "Popular", "New"):
        assert f"<h2>{heading}" in page
    trending = page.split("<h2>Trending")[1].split("<h2>Popular")[0]
    assert names_in(trending) == {"neon-noir"}  # the only style used in the last 7 days
    assert '<img src="/styles/neon-noir/preview/2/thumb.webp"' in page
    thumb = get(gallery, "/styles/neon-noir/preview/2/thumb.webp")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert thumb.content[:4] == b"RIFF" and thumb.content[8:12] == b"WEBP"
    # A style without a preview shows its code drawn as bars instead.
    assert 'aria-label="Code of bulk-29"' in page


def test_style_page_has_everything(gallery: Gallery) -> None:
    page = get(gallery, "/styles/neon-noir").text
    head_code = "ABCDEFGHIJKLMNOPQRST1"
    assert f'<code id="style-code" class="code">{head_code}</code>' in page
    assert 'data-copy="style-code"' in page  # the copy button
    assert '<img src="/styles/neon-noir/preview/2.webp"' in page  # the preview grid
    assert "@2" in page and "@1" in page and CODE in page  # both revisions, newest first
    assert page.index("@2") < page.index("@1")
    assert names_in(page.split("<h2>Forks")[1].split("<h2>Similar")[0]) == {"neon-fork"}
    assert "neon-noir" not in names_in(page.split("<h2>Similar styles")[1])  # never itself
    assert "3 uses in the last 30 days" in page  # done uses only; the failed one is not counted
    assert page.count("<rect") >= 30  # one bar per day
    assert f'href="/users/{ALICE}"' in page
    # OpenGraph: a link posted in Discord unfurls with the preview (an absolute address).
    assert '<meta property="og:title" content="neon-noir">' in page
    og_image = r'<meta property="og:image" content="http://127\.0\.0\.1:\d+/styles/neon-noir/preview/2\.webp">'
    assert re.search(og_image, page)
    assert '<meta name="twitter:card" content="summary_large_image">' in page


def test_names_and_descriptions_render_as_text(gallery: Gallery) -> None:
    for path in ("/styles/neon-noir", "/", "/tags/noir", f"/users/{ALICE}", "/search?q=pwned"):
        page = get(gallery, path).text
        assert "<script>alert" not in page and "<b>bold</b>" not in page, path
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page, path
    page = get(gallery, "/styles/neon-noir").text
    # Inside attributes too (the OpenGraph description): quotes cannot close the attribute.
    og = re.search(r'<meta property="og:description" content="([^"]*)">', page).group(1)
    assert html.unescape(og).startswith(NASTY[:50])
    # Right-to-left overrides stay inside their own isolate (<bdi>), so they cannot reorder the page.
    assert re.search(r"<bdi>[^<]*\u202eevil\u202c[^<]*</bdi>", page)
    # The JSON API returns the same text as data.
    assert get(gallery, "/api/styles/neon-noir").json()["description"] == NASTY


def test_search_tag_and_author_pages(gallery: Gallery) -> None:
    assert names_in(get(gallery, "/search?q=noir").text) >= {"neon-noir", "neon-fork"}
    second = get(gallery, "/search?q=bulk+style&page=2").text
    first = get(gallery, "/search?q=bulk+style").text
    assert len(names_in(first) & {f"bulk-{i:02d}" for i in range(BULK)}) == 24 and "page=2" in first
    assert names_in(second) and not names_in(second) & names_in(first)
    tagged = get(gallery, "/tags/bulk?sort=new").text
    assert len([n for n in names_in(tagged) if n.startswith("bulk-")]) == 24
    cursor = re.search(r'href="\?sort=new&amp;cursor=([^"]+)"', tagged).group(1)
    rest = get(gallery, f"/tags/bulk?sort=new&cursor={html.unescape(cursor)}").text
    assert {n for n in names_in(rest) if n.startswith("bulk-")} == {f"bulk-{i:02d}" for i in range(BULK - 24)}
    assert names_in(get(gallery, f"/users/{ALICE}").text) >= {"neon-noir"}
    assert get(gallery, "/users/424242").status_code == 404  # nobody with public styles


def test_etag_and_cache_headers(gallery: Gallery) -> None:
    for path in ("/", "/styles/neon-noir", "/api/styles/neon-noir", "/styles/neon-noir/preview/2.webp"):
        response = get(gallery, path)
        assert response.status_code == 200
        assert response.headers["cache-control"].startswith("public, max-age=")
        etag = response.headers["etag"]
        again = get(gallery, path, **{"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert get(gallery, path, **{"If-None-Match": '"other"'}).status_code == 200


def test_every_case_of_the_visibility_rule_through_the_web(gallery_on: Gallery) -> None:
    """Only public, live styles appear, whatever the address: pages, API, listings, previews, family."""
    gallery = gallery_on
    missing = get(gallery, "/api/styles/no-such-style")
    for name in gallery.matrix:
        shown = name in gallery.expected_public
        for path in (f"/styles/{name}", f"/api/styles/{name}", f"/styles/{name}/preview/1.webp",
                     f"/styles/{name}/preview/1/thumb.webp"):  # fmt: skip
            assert get(gallery, path).status_code == (200 if shown else 404), (name, path)
        if not shown:  # the same answer as a style that never existed: nothing tells them apart
            refused = get(gallery, f"/api/styles/{name}").json()
            assert refused == {**missing.json(), "message": missing.json()["message"].replace("no-such-style", name)}
    matrix = set(gallery.matrix)
    expected = gallery.expected_public
    listings = {
        "home": names_in(get(gallery, "/").text),
        "search": names_in(get(gallery, "/search?q=matrix+case").text),
        "tag": names_in(get(gallery, "/tags/matrix").text),
        "author": names_in(get(gallery, "/users/7003").text),
        "forks": names_in(get(gallery, "/styles/matrix-parent").text.split("<h2>Forks")[1].split("<h2>Similar")[0]),
        "similar": names_in(get(gallery, "/styles/matrix-parent").text.split("<h2>Similar")[1]),
        "api": {s["name"] for s in get(gallery, "/api/styles?tag=matrix&limit=100").json()["items"]},
        "api search": {s["name"] for s in get(gallery, "/api/styles?q=matrix&limit=100").json()["items"]},
        "autocomplete": set(get(gallery, "/api/autocomplete?q=m-&limit=25").json()["names"]),
    }
    for listing, names in listings.items():
        assert names & matrix == expected, listing
