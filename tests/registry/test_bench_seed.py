"""The benchmark seeder (bench/registry_seed.py) writes data the repository reads back consistently."""

from __future__ import annotations

import datetime as dt
import importlib.util

from sqlalchemy import func, select

import registry
from registry.models import Favourite, Style, Usage
from tests.conftest import PROJECT_ROOT


def load_seeder():
    spec = importlib.util.spec_from_file_location("registry_seed", PROJECT_ROOT / "bench" / "registry_seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_seeded_counters_match_the_rows(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'seed.db'}"
    await load_seeder().seed(url, n_styles=300, n_usages=3000, n_users=50, n_favourites=500, chunk=100)
    engine = registry.create_engine(url)
    sessions = registry.create_session_factory(engine)
    try:
        async with sessions() as session:
            done = (
                select(Usage.style_id, func.count().label("uses"))
                .where(Usage.status == "done", Usage.style_id.is_not(None))
                .group_by(Usage.style_id)
                .subquery()
            )
            mismatched = await session.scalar(
                select(func.count())
                .select_from(Style)
                .outerjoin(done, done.c.style_id == Style.id)
                .where(Style.use_count != func.coalesce(done.c.uses, 0))
            )
            assert mismatched == 0
            favourites = await session.scalar(select(func.sum(Style.favourite_count)))
            assert favourites == await session.scalar(select(func.count()).select_from(Favourite))
            # Every read path works on seeded data.
            top = (await registry.browse(session, user_id=None, guild_id=None, sort="trending", limit=5)).items
            assert top and all(style.last_used_at is not None for style in top)
            revision = await registry.resolve_reference(session, top[0].name, user_id=None, guild_id=None)
            assert revision.number == top[0].head_number
            assert await registry.search(session, top[0].name.split("-")[0], user_id=None, guild_id=None)
            similar = await registry.similar_styles(session, revision.code, user_id=None, guild_id=None, k=3)
            assert similar[0].style.id == top[0].id and similar[0].distance == 0.0
            assert len(await registry.unfinished_usages(session)) == 20
            # Seeded outcomes were posted: none waits for a restarted bot to post it.
            assert await registry.undelivered_usages(session, since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == []
    finally:
        await engine.dispose()
