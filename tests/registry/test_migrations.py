"""Migrations: upgrade, downgrade to base, upgrade again; and the models agree with the migrations."""

from __future__ import annotations

import asyncio
import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column, Index, Integer, MetaData, Table, inspect, text

from alembic import command
from registry.db import alembic_config, create_engine, create_session_factory, upgrade_to_head
from registry.models import Base, include_object, is_dialect_specific

EXPECTED_TABLES = set(Base.metadata.tables)


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def _diff(url: str, metadata=Base.metadata) -> list:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:

            def compare(sync):
                context = MigrationContext.configure(
                    sync, opts={"compare_type": True, "include_object": include_object}
                )
                return compare_metadata(context, metadata)

            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(fresh_database_url: str) -> None:
    await upgrade_to_head(fresh_database_url)
    assert EXPECTED_TABLES <= await _tables(fresh_database_url)
    await asyncio.to_thread(command.downgrade, alembic_config(fresh_database_url), "base")
    assert await _tables(fresh_database_url) <= {"alembic_version"}
    await upgrade_to_head(fresh_database_url)
    assert EXPECTED_TABLES <= await _tables(fresh_database_url)


async def test_models_match_migrations(fresh_database_url: str) -> None:
    await upgrade_to_head(fresh_database_url)
    assert await _diff(fresh_database_url) == []
    # The same check through Alembic's own command (what `alembic check` runs).
    await asyncio.to_thread(command.check, alembic_config(fresh_database_url))


async def test_upgrade_is_idempotent(fresh_database_url: str) -> None:
    await upgrade_to_head(fresh_database_url)
    await upgrade_to_head(fresh_database_url)  # already at head: nothing to do, no error
    assert EXPECTED_TABLES <= await _tables(fresh_database_url)


async def test_drift_check_sees_a_difference(fresh_database_url: str) -> None:
    # The check above is meaningful: a model the migrations lack shows up as a difference.
    await upgrade_to_head(fresh_database_url)
    extended = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(extended)
    Table("not_migrated", extended, Column("id", Integer, primary_key=True))
    diff = await _diff(fresh_database_url, extended)
    assert [op[0] for op in diff] == ["add_table"]


async def test_rows_finished_before_0003_count_as_delivered(fresh_database_url: str) -> None:
    """Upgrading never re-posts old results: finished rows get delivered_at = finished_at; unfinished ones none."""
    await asyncio.to_thread(command.upgrade, alembic_config(fresh_database_url), "0002")
    engine = create_engine(fresh_database_url)
    columns = (
        "job_id, user_id, prompt, negative_prompt, seed, steps, guidance_scale, strength, width, height, "
        "model_version, count, status, queued_at, finished_at"
    )
    try:
        async with engine.begin() as connection:
            for job, status, finished in (("a" * 32, "done", "'2026-11-30 10:00:00'"), ("b" * 32, "queued", "NULL")):
                await connection.execute(
                    text(
                        f"INSERT INTO usages ({columns}) VALUES (:job, 1, 'p', '', 1, 20, 3.0, 0.9, 512, 512, 1, 1, "
                        f":status, '2026-11-30 09:59:00', {finished})"
                    ).bindparams(job=job, status=status)
                )
        await upgrade_to_head(fresh_database_url)
        async with engine.connect() as connection:
            rows = dict(
                (await connection.execute(text("SELECT job_id, delivered_at IS NOT NULL FROM usages"))).all()
            )
    finally:
        await engine.dispose()
    assert rows == {"a" * 32: True, "b" * 32: False}


async def test_search_objects_follow_the_migration(fresh_database_url: str) -> None:
    await upgrade_to_head(fresh_database_url)
    search_object = "style_fts" if fresh_database_url.startswith("sqlite") else "ix_styles_search_tsv"
    assert search_object in await _search_objects(fresh_database_url)
    await asyncio.to_thread(command.downgrade, alembic_config(fresh_database_url), "base")
    assert search_object not in await _search_objects(fresh_database_url)


async def _search_objects(url: str) -> set[str]:
    engine = create_engine(url)
    query = (
        "SELECT name FROM sqlite_master"
        if url.startswith("sqlite")
        else "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
    )
    try:
        async with engine.connect() as connection:
            return {row[0] for row in await connection.exec_driver_sql(query)}
    finally:
        await engine.dispose()


def test_alembic_command_line(tmp_path) -> None:
    # What operators run: `alembic -x url=... upgrade head` / `alembic check` from the project root.
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    for args in (["upgrade", "head"], ["check"], ["current"]):
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    assert "0004 (head)" in result.stdout


# --- the whole schema, as each database describes it ----------------------------------------------------
#
# Alembic's comparison does not look at CHECK constraints or at partial index predicates, so the
# drift check also compares what the databases themselves report for every column, constraint and
# index: a database built by the migrations against one built by `create_all` from the models.


async def _schema(url: str) -> dict[tuple[str, str, str], str | tuple]:
    """(kind, table, name) -> definition for every column, constraint and index of the registry tables."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                rows = await connection.exec_driver_sql(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                )
                found = {}
                for kind, name, table, sql in rows:
                    if kind == "table":
                        found.update(((*key, table, item[0]), item[1]) for key, item in _sqlite_table_items(sql))
                    else:
                        found[kind, table, name] = " ".join(sql.split())
            else:
                found = {}
                for table, name, definition in await connection.exec_driver_sql(
                    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                ):
                    found["index", table, name] = definition
                for table, name, definition in await connection.exec_driver_sql(
                    "SELECT cl.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                    "JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace "
                    "WHERE n.nspname = 'public'"
                ):
                    found["constraint", table, name] = definition
                for table, name, *definition in await connection.exec_driver_sql(
                    "SELECT table_name, column_name, data_type, is_nullable, column_default, "
                    "character_maximum_length, collation_name, is_generated, ordinal_position "
                    "FROM information_schema.columns WHERE table_schema = 'public'"
                ):
                    found["column", table, name] = tuple(definition[:-1])  # not the position
    finally:
        await engine.dispose()
    return {
        key: definition
        for key, definition in found.items()
        if key[1] != "alembic_version" and not is_dialect_specific(key[1]) and not is_dialect_specific(key[2])
    }


def _sqlite_table_items(sql: str):
    """The columns and named constraints in a CREATE TABLE statement, split at top-level commas."""
    body = sql[sql.index("(") + 1 : sql.rindex(")")]
    items, depth, start = [], 0, 0
    for position, char in enumerate(body + ","):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(" ".join(body[start:position].split()))
            start = position + 1
    for item in items:
        named = re.match(r"CONSTRAINT (\S+) (.*)", item)
        if named:
            yield ("constraint",), (named[1], named[2])
        else:
            name, _, definition = item.partition(" ")
            yield ("column",), (name.strip('"'), definition)


async def _create_all(url: str, metadata: MetaData = Base.metadata) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


def _differences(left: dict, right: dict) -> set:
    return {key for key in left.keys() | right.keys() if left.get(key) != right.get(key)}


async def test_migrated_schema_equals_the_models(fresh_database_url: str, another_fresh_database_url: str) -> None:
    await upgrade_to_head(fresh_database_url)
    await _create_all(another_fresh_database_url)
    migrated, modelled = await _schema(fresh_database_url), await _schema(another_fresh_database_url)
    # The comparison covers what Alembic's does not: CHECK constraints and partial index predicates.
    assert "'private'" in str(migrated["constraint", "styles", "ck_styles_visibility"])
    assert "'running'" in migrated["index", "usages", "ix_usages_unfinished"]
    assert len(migrated) > 100
    assert _differences(migrated, modelled) == set()


async def test_schema_comparison_sees_check_and_predicate_changes(
    fresh_database_url: str, another_fresh_database_url: str
) -> None:
    await upgrade_to_head(fresh_database_url)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    styles, usages = changed.tables["styles"], changed.tables["usages"]
    styles.constraints.discard(next(c for c in styles.constraints if c.name == "ck_styles_visibility"))
    styles.append_constraint(CheckConstraint("visibility IN ('public', 'private')", name="visibility"))
    usages.indexes.discard(next(i for i in usages.indexes if i.name == "ix_usages_unfinished"))
    only_queued = text("status = 'queued'")
    Index("ix_usages_unfinished", usages.c.status, sqlite_where=only_queued, postgresql_where=only_queued)
    await _create_all(another_fresh_database_url, changed)
    differences = _differences(await _schema(fresh_database_url), await _schema(another_fresh_database_url))
    assert differences == {
        ("constraint", "styles", "ck_styles_visibility"),
        ("index", "usages", "ix_usages_unfinished"),
    }
    # ...which Alembic's own comparison misses: that is why the test above exists.
    assert await _diff(another_fresh_database_url) == []


async def test_0004_indexes_the_heads_of_styles_made_before_it(fresh_database_url: str) -> None:
    """Styles saved before 0004 are found by similar after it (PostgreSQL: `styles.latent` backfilled from
    each style's head revision), and suggestions work on both backends."""
    import registry

    await asyncio.to_thread(command.upgrade, alembic_config(fresh_database_url), "0003")
    engine = create_engine(fresh_database_url)
    now = "'2026-11-30 10:00:00'"
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"INSERT INTO users (id, display_name, created_at, updated_at) "
                                          f"VALUES (1, '', {now}, {now})"))  # fmt: skip
            await connection.execute(
                text(
                    "INSERT INTO styles (id, name, owner_id, visibility, description, tags, head_number, version, "
                    f"created_at, updated_at, use_count, favourite_count) VALUES (1, 'old-style', 1, 'public', '', "
                    f"'', 2, 1, {now}, {now}, 0, 0)"
                )
            )
            for number, level in ((1, 0), (2, 63)):  # the head is revision 2: all levels 63
                code = ("A" if level == 0 else "_") * 20 + "1"
                await connection.execute(
                    text(
                        "INSERT INTO revisions (style_id, number, code, version, levels, author_id, note, created_at) "
                        f"VALUES (1, :number, :code, 1, :levels, 1, '', {now})"
                    ).bindparams(number=number, code=code, levels=bytes([level] * 20)),
                )
        await upgrade_to_head(fresh_database_url)
        async with create_session_factory(engine)() as session:
            found = await registry.similar_styles(session, "_" * 20 + "1", user_id=None, guild_id=None, k=1)
            assert [(s.style.name, s.distance) for s in found] == [("old-style", 0.0)]
            assert await registry.suggest_names(session, "old-styel", user_id=None, guild_id=None) == ["old-style"]
    finally:
        await engine.dispose()
