"""Migrations: upgrade, downgrade to base, upgrade again; and the models agree with the migrations."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from alembic import command
from registry.db import alembic_config, create_engine, upgrade_to_head
from registry.models import Base

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
                    sync, opts={"compare_type": True, "include_object": _include_object()}
                )
                return compare_metadata(context, metadata)

            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


def _include_object():
    from registry.models import DIALECT_SPECIFIC_OBJECTS

    def include(obj, name, type_, reflected, compare_to):
        return not (name in DIALECT_SPECIFIC_OBJECTS or (name or "").startswith("style_fts"))

    return include


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
    assert "0001 (head)" in result.stdout
