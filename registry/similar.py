"""Find similar styles: the k visible styles whose head revision is nearest to a code, same encoder version.

One interface, two engines:
- PostgreSQL: one query. `styles.latent` (pgvector `vector(20)`, the head revision's levels, kept by a
  trigger; migration 0004) is ordered by L2 distance through the HNSW index `ix_styles_latent_hnsw`,
  with visibility (soft delete and guild hides included) and the version in the same WHERE. pgvector's
  iterative index scan (`hnsw.iterative_scan`, set per connection by `registry.db.create_engine`) keeps
  reading the graph until enough rows pass the filter. HNSW is approximate (recall is measured in
  docs/benchmarks.md); when it yields fewer than k rows (the asker sees few styles near the code, or a
  version is rare), the same query runs once more in exact order.
- SQLite: an exact in-memory index per process (registry/latent_index.py).

A style's kind decides the space its vectors live in (`LatentSpace`): today every style is a stylecode
(20 levels). A later kind (an image embedding) adds its own space: a column and HNSW index on
PostgreSQL, a matrix in the embedded index; `similar_styles` compares within one space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Float, Text, and_, cast, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from stylecodes.codec import LATENT_DIM, MAX_LEVEL, StyleCode

from ._sql import dialect_name
from .latent_index import latent_index, nearest_visible
from .models import PgVector, Revision, Style
from .names import check_limit
from .styles import to_code
from .visibility import visible_to

SIMILAR_MAX = 25

__all__ = ["CODE_SPACE", "SIMILAR_MAX", "LatentSpace", "SimilarStyle", "similar_styles", "warm_similar_index"]


@dataclass(frozen=True)
class LatentSpace:
    """Where one kind of style's head vectors live, and how their distances read."""

    kind: str
    column: str  # PostgreSQL: styles.<column>, vector(dimensions), HNSW index (L2)
    dimensions: int
    unit: float  # one stored distance unit, in reported distance


# Stylecodes: the 20 levels (0..63); one level step is 2/63 in dequantised latent units.
CODE_SPACE = LatentSpace(kind="code", column="latent", dimensions=LATENT_DIM, unit=2.0 / MAX_LEVEL)


async def warm_similar_index(session: AsyncSession) -> int:
    """SQLite: build (or bring up to date) this engine's in-memory index; returns how many styles it holds.

    Call it once at application start, so the first `/stylecode similar` does not pay for loading every
    head revision; the event loop keeps serving other tasks meanwhile. PostgreSQL: nothing to build (the
    HNSW index lives in the database); returns 0.
    """
    if dialect_name(session) == "postgresql":
        return 0
    index = latent_index(session)
    await index.refresh(session)
    return index.size


@dataclass
class SimilarStyle:
    style: Style
    revision_id: int
    code: str
    distance: float  # Euclidean distance between the dequantised latents


async def similar_styles(
    session: AsyncSession,
    code: str | StyleCode,
    *,
    user_id: int | None,
    guild_id: int | None,
    k: int = 10,
    exclude_style_id: int | None = None,
) -> list[SimilarStyle]:
    """The `k` visible styles whose head revision is nearest to `code` (same encoder version), nearest first."""
    check_limit(k, SIMILAR_MAX, what="k")
    style_code = to_code(code)
    space = CODE_SPACE
    visible = visible_to(user_id, guild_id)
    if dialect_name(session) == "postgresql":
        found = await _nearest_postgres(session, space, style_code, visible, k, exclude_style_id)
    else:
        found = await nearest_visible(session, style_code, visible, k, exclude_style_id)
    return [
        SimilarStyle(style, revision_id, head_code, distance=math.sqrt(squared) * space.unit)
        for style, revision_id, head_code, squared in found
    ]


async def _nearest_postgres(
    session: AsyncSession,
    space: LatentSpace,
    code: StyleCode,
    visible: ColumnElement[bool],
    k: int,
    exclude_style_id: int | None,
) -> list[tuple[Style, int, str, float]]:
    query = cast(cast("[" + ",".join(str(level) for level in code.levels) + "]", Text), PgVector())
    distance = literal_column(f"styles.{space.column}").op("<->", return_type=Float)(query)
    conditions = [visible, Style.version == code.version, literal_column(f"styles.{space.column}").is_not(None)]
    if exclude_style_id is not None:
        conditions.append(Style.id != exclude_style_id)
    statement = (
        select(Style, Revision.id, Revision.code, distance.label("distance"))
        .join(Revision, and_(Revision.style_id == Style.id, Revision.number == Style.head_number))
        .where(*conditions)
        .limit(k)
    )
    rows = (await session.execute(statement.order_by(distance))).all()  # the HNSW index, iteratively
    if len(rows) < k:
        # `+ 0` is not what the index orders by: the planner scans the candidates exactly (by
        # ix_styles_version when the version is rare).
        rows = (await session.execute(statement.order_by(distance + 0))).all()
    # Ties in the order every path uses: lower style id first.
    ordered = sorted(rows, key=lambda row: (row.distance, row[0].id))
    return [(style, revision_id, head_code, d * d) for style, revision_id, head_code, d in ordered]
