"""Find similar styles: exact k nearest neighbours by latent distance, same encoder version only.

Neither SQLite nor PostgreSQL (pgvector is not available) has a vector index, and in 20 dimensions a
B-tree band prefilter cannot be exact: uniformly spread codes sit ~38 levels apart, so a band narrow
enough to help would drop true neighbours. So each process keeps an in-memory matrix of every
style's head-revision levels (1M styles: 80 MB of float32) and scans it exactly with one
matrix-vector product; visibility is then checked in SQL on the nearest candidates only.

Revisions are immutable and append-only, so keeping the matrix fresh is cheap: each query first
looks up the newest revision id, and when it moved, reads the revisions above the newest one it has
seen (minus a small margin for transactions that committed out of id order), so a new style or
revision is findable at once.
Visibility, deletion and moderation changes need no refresh: they are checked per query.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from stylecodes.codec import LATENT_DIM, MAX_LEVEL, StyleCode

from .browse import _check_limit
from .models import Revision, Style
from .styles import to_code
from .visibility import visible_to

SIMILAR_MAX = 25
_ID_MARGIN = 64  # re-read this many ids below the watermark: out-of-order commits are still picked up
_LEVEL_TO_LATENT = 2.0 / MAX_LEVEL  # one level step in dequantised latent units


@dataclass
class SimilarStyle:
    style: Style
    revision_id: int
    code: str
    distance: float  # Euclidean distance between the dequantised latents


class _VersionMatrix:
    """Head-revision levels of every style with one encoder version."""

    def __init__(self) -> None:
        self.style_ids = np.zeros(0, dtype=np.int64)  # (N,)  -1 = slot moved to another version
        self.revision_ids = np.zeros(0, dtype=np.int64)  # (N,)
        self.vectors = np.zeros((0, LATENT_DIM), dtype=np.float32)  # (N, 20) levels as float32
        self.norms = np.zeros(0, dtype=np.float32)  # (N,) squared norms; inf = dead slot, never nearest
        self.alive = 0
        self.pending: list[tuple[int, int, bytes]] = []

    def flush(self) -> None:
        if not self.pending:
            return
        style_ids, revision_ids, blobs = zip(*self.pending, strict=True)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(-1, LATENT_DIM).astype(np.float32)
        self.style_ids = np.concatenate([self.style_ids, np.asarray(style_ids, dtype=np.int64)])
        self.revision_ids = np.concatenate([self.revision_ids, np.asarray(revision_ids, dtype=np.int64)])
        self.vectors = np.concatenate([self.vectors, vectors])
        norms = (vectors * vectors).sum(axis=1)
        norms[np.asarray(style_ids) < 0] = np.inf  # retired before they were ever stored
        self.norms = np.concatenate([self.norms, norms])
        self.alive += int((np.asarray(style_ids) >= 0).sum())
        self.pending.clear()

    def nearest(self, levels: tuple[int, ...], count: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the `count` nearest live rows, nearest first, and their squared distances."""
        self.flush()
        query = np.asarray(levels, dtype=np.float32)  # (20,)
        # |v - q|^2 = |v|^2 - 2 v.q + |q|^2: exact here, every term is an integer below 2^24.
        distances = self.vectors @ query  # (N,)
        distances *= -2.0
        distances += self.norms
        distances += float(query @ query)
        count = min(count, self.alive)
        if count == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        part = np.argpartition(distances, count - 1)[:count]
        order = part[np.lexsort((self.style_ids[part], distances[part]))]  # ties: lower style id first
        return order, distances[order]


class LatentIndex:
    """Per-engine in-memory index of head revisions, refreshed incrementally from the revisions table."""

    def __init__(self) -> None:
        self.matrices: dict[int, _VersionMatrix] = {}
        self.location: dict[int, tuple[int, int, int]] = {}  # style id -> (version, slot or -1, revision number)
        self.watermark = 0
        self.lock = asyncio.Lock()

    async def refresh(self, session: AsyncSession) -> None:
        async with self.lock:
            newest = await session.scalar(select(func.max(Revision.id)))
            if newest is None or newest <= self.watermark:
                return  # nothing new (one primary-key lookup)
            statement = (
                select(Revision.id, Revision.style_id, Revision.version, Revision.number, Revision.levels)
                .where(Revision.id > self.watermark - _ID_MARGIN)
                .order_by(Revision.id)
            )
            for revision_id, style_id, version, number, levels in await session.execute(statement):
                self._add(revision_id, style_id, version, number, levels)
                self.watermark = max(self.watermark, revision_id)

    def _add(self, revision_id: int, style_id: int, version: int, number: int, levels: bytes) -> None:
        known = self.location.get(style_id)
        if known is not None and known[2] >= number:
            return  # an older revision, or one already indexed
        if known is not None:
            self._retire(style_id, *known[:2])
        matrix = self.matrices.setdefault(version, _VersionMatrix())
        slot = len(matrix.style_ids) + len(matrix.pending)
        matrix.pending.append((style_id, revision_id, bytes(levels)))
        self.location[style_id] = (version, slot, number)

    def _retire(self, style_id: int, version: int, slot: int) -> None:
        """Mark a superseded head revision dead (its slot stays; no copying of the matrix)."""
        matrix = self.matrices[version]
        stored = len(matrix.style_ids)
        if slot < stored:
            matrix.style_ids[slot] = -1
            matrix.norms[slot] = np.inf
            matrix.alive -= 1
        else:
            _, revision_id, levels = matrix.pending[slot - stored]
            matrix.pending[slot - stored] = (-1, revision_id, levels)

    def nearest(self, code: StyleCode, count: int) -> list[tuple[int, int, float, str]]:
        """(style id, revision id, squared level distance, code) of the `count` nearest head revisions."""
        matrix = self.matrices.get(code.version)
        if matrix is None:
            return []
        positions, distances = matrix.nearest(code.levels, count)
        return [
            (int(matrix.style_ids[p]), int(matrix.revision_ids[p]), float(d), _code(matrix.vectors[p], code.version))
            for p, d in zip(positions, distances, strict=True)
        ]


def _code(vector: np.ndarray, version: int) -> str:
    return StyleCode(tuple(int(level) for level in vector), version).canonical


_indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def latent_index(session: AsyncSession) -> LatentIndex:
    engine = session.get_bind()
    index = _indexes.get(engine)
    if index is None:
        index = _indexes[engine] = LatentIndex()
    return index


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
    _check_limit(k, SIMILAR_MAX)
    style_code = to_code(code)
    index = latent_index(session)
    await index.refresh(session)
    visible = visible_to(user_id, guild_id)
    wanted = k + (exclude_style_id is not None)
    fetch = 2 * wanted + 8  # most styles are public: one round usually suffices
    while True:
        candidates = index.nearest(style_code, fetch)
        ids = [style_id for style_id, _, _, _ in candidates]
        styles = {style.id: style for style in await session.scalars(select(Style).where(Style.id.in_(ids), visible))}
        found = [
            SimilarStyle(styles[sid], rid, found_code, distance=float(np.sqrt(d2)) * _LEVEL_TO_LATENT)
            for sid, rid, d2, found_code in candidates
            if sid in styles and sid != exclude_style_id
        ]
        # Enough visible neighbours among the nearest candidates, or nothing further to look at: exact.
        if len(found) >= k or len(candidates) < fetch:
            break
        fetch *= 4
    return found[:k]
