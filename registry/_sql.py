"""Small helpers shared by the repository modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def dialect_name_of(connection: AsyncConnection) -> str:
    return connection.dialect.name


def insert(session: AsyncSession, model):
    """INSERT with ON CONFLICT support on both backends."""
    return (postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert)(model)


@asynccontextmanager
async def atomic(session: AsyncSession) -> AsyncIterator[None]:
    """One write operation = one transaction: commit on success, roll everything back on any error."""
    try:
        yield
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
