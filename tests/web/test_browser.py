"""A person's path through the gallery in a real browser (Debian's chromium, driven by Playwright):
open the home page, search, open a style, copy its code. Screenshots are kept as test artifacts in
tests/artifacts/web/ (gitignored); the test prints where."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.web.conftest import NASTY, Gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts" / "web"
# Without the background-networking switches chromium keeps calling home, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")
def test_home_search_style_copy_in_chromium(gallery: Gallery) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    copied, dialogs, errors = asyncio.run(browse(gallery, ARTIFACTS))
    print(f"\nscreenshots: {ARTIFACTS}/" + "{1-home,2-search,3-style,4-copied}.png")
    assert copied == "ABCDEFGHIJKLMNOPQRST1"
    assert dialogs == []  # the <script> in the description never ran
    assert errors == []  # no script error on any page
    assert all((ARTIFACTS / f"{name}.png").stat().st_size > 1000 for name in ("1-home", "2-search", "3-style"))


async def browse(gallery: Gallery, artifacts: Path) -> tuple[str, list[str], list[str]]:
    from playwright.async_api import async_playwright

    dialogs: list[str] = []
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gallery.url)
            page = await context.new_page()
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            page.on("pageerror", lambda error: errors.append(str(error)))

            await page.goto(gallery.url + "/")
            await page.get_by_role("heading", name="Trending").wait_for()
            await page.screenshot(path=artifacts / "1-home.png", full_page=True)

            box = page.get_by_label("Search styles")
            await box.fill("neon")
            await box.press("Enter")
            await page.wait_for_url("**/search?q=neon")
            await page.screenshot(path=artifacts / "2-search.png", full_page=True)

            await page.locator('a[href="/styles/neon-noir"]').first.click()
            await page.wait_for_url("**/styles/neon-noir")
            description = await page.locator("article.style > p.description").text_content()
            assert description.strip() == NASTY
            await page.screenshot(path=artifacts / "3-style.png", full_page=True)

            await page.get_by_role("button", name="Copy code").click()
            await page.get_by_role("status").filter(has_text="Copied!").wait_for()
            copied = await page.evaluate("navigator.clipboard.readText()")
            await page.screenshot(path=artifacts / "4-copied.png")
        finally:
            await browser.close()
    return copied, dialogs, errors
