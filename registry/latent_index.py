"""The embedded (SQLite) path of `similar`: an exact, in-memory nearest-neighbour index per engine.

SQLite has no vector index this project can load (the Python builds in use lack `load_extension`, so
`sqlite-vec` is out), and in 20 dimensions a B-tree band prefilter cannot be exact: uniformly spread
codes sit ~38 levels apart, so a band narrow enough to help would drop true neighbours. So the
process keeps an in-memory matrix of every style's head-revision levels (1M styles: 80 MB of float32)
and scans it exactly with one matrix-vector product; visibility is then checked in SQL on the nearest
candidates only. PostgreSQL does all of this in one query instead (pgvector, registry/similar.py).

Revisions are immutable and append-only, so keeping the matrix fresh is cheap: each query first
looks up the newest revision id, and when it moved, reads the revisions above the newest one it has
seen (minus a small margin for transactions that committed out of id order), so a new style or
revision is findable at once. Visibility, deletion and moderation changes need no refresh: they are
checked per query.

Loading: `warm_similar_index` builds the index at application start (otherwise the first query
does). Revisions are read in chunks of `_LOAD_CHUNK` (the event loop serves other tasks between
chunks) and each chunk is folded in with vectorised numpy in a worker thread; only a handful of new
rows (the per-query refresh) are folded in on the event loop.
"""

from __future__ import annotations

import asyncio
import weakref

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from stylecodes.codec import LATENT_DIM, StyleCode

from .models import Revision, Style

_ID_MARGIN = 64  # re-read this many ids below the watermark: out-of-order commits are still picked up
_LOAD_CHUNK = 50_000  # revisions per read while loading
_INLINE_ROWS = 1_000  # fewer new rows than this are folded in on the event loop, more in a worker thread
_COMPACT_MIN = 1024  # dead slots (superseded head revisions) tolerated before a matrix is compacted
# Ids per visibility lookup (`id IN (...)`): far below the 32,767 bind parameters of asyncpg and SQLite.
_LOOKUP_CHUNK = 5_000


class _VersionMatrix:
    """Head-revision levels of every style with one encoder version, in slots that grow geometrically
    (by a quarter: at most 25 % spare room, and appends stay amortised O(1))."""

    def __init__(self) -> None:
        self.size = 0  # slots in use; dead ones (superseded head revisions) stay until `compact`
        self.alive = 0
        self.style_ids = np.zeros(0, dtype=np.int64)  # -1 = dead slot
        self.revision_ids = np.zeros(0, dtype=np.int64)
        self.vectors = np.zeros((0, LATENT_DIM), dtype=np.float32)  # levels as float32
        self.norms = np.zeros(0, dtype=np.float32)  # squared norms; inf = dead slot, never nearest

    def append(self, style_ids: np.ndarray, revision_ids: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Store rows (levels: (n, 20) uint8); returns their slots."""
        count = len(style_ids)
        if self.size + count > len(self.style_ids):
            self._grow(max(len(self.style_ids) * 5 // 4, self.size + count, 1024))
        slots = np.arange(self.size, self.size + count)
        vectors = levels.astype(np.float32)
        self.style_ids[slots] = style_ids
        self.revision_ids[slots] = revision_ids
        self.vectors[slots] = vectors
        self.norms[slots] = np.einsum("ij,ij->i", vectors, vectors)
        self.size += count
        self.alive += count
        return slots

    def _grow(self, capacity: int) -> None:
        def grown(array: np.ndarray, fill) -> np.ndarray:
            bigger = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
            bigger[: self.size] = array[: self.size]
            bigger[self.size :] = fill
            return bigger

        self.style_ids = grown(self.style_ids, -1)
        self.revision_ids = grown(self.revision_ids, -1)
        self.vectors = grown(self.vectors, 0.0)
        self.norms = grown(self.norms, np.inf)

    def retire(self, slots: np.ndarray) -> None:
        """Mark superseded head revisions dead (no copying; `compact` reclaims the slots)."""
        self.style_ids[slots] = -1
        self.norms[slots] = np.inf
        self.alive -= len(slots)

    def needs_compacting(self) -> bool:
        dead = self.size - self.alive
        return dead >= max(_COMPACT_MIN, self.alive // 8)

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        """Drop dead slots; returns (style ids, new slots) of the rows that moved."""
        keep = np.flatnonzero(self.style_ids[: self.size] >= 0)
        for array, fill in ((self.style_ids, -1), (self.revision_ids, -1), (self.vectors, 0.0), (self.norms, np.inf)):
            array[: len(keep)] = array[keep]
            array[len(keep) : self.size] = fill
        self.size = self.alive = len(keep)
        return self.style_ids[: self.size], np.arange(self.size)

    def nearest(self, levels: tuple[int, ...], count: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the `count` nearest live rows, nearest first, and their squared distances."""
        count = min(count, self.alive)
        if count == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.asarray(levels, dtype=np.float32)  # (20,)
        # |v - q|^2 = |v|^2 - 2 v.q + |q|^2: exact here, every term is an integer below 2^24.
        distances = self.vectors[: self.size] @ query  # (N,)
        distances *= -2.0
        distances += self.norms[: self.size]
        distances += float(query @ query)
        part = np.argpartition(distances, count - 1)[:count]
        order = part[np.lexsort((self.style_ids[part], distances[part]))]  # ties: lower style id first
        return order, distances[order]


class LatentIndex:
    """Per-engine in-memory index of head revisions, refreshed incrementally from the revisions table.

    Per style, in arrays indexed by style id (the database hands ids out densely, from 1): the indexed
    head revision's number (0 = none), its encoder version and its slot. `lock` guards every read and
    write, including the ones a worker thread makes while loading.
    """

    def __init__(self) -> None:
        self.matrices: dict[int, _VersionMatrix] = {}
        self.head_number = np.zeros(0, dtype=np.int32)
        self.head_version = np.zeros(0, dtype=np.int16)
        self.head_slot = np.zeros(0, dtype=np.int64)
        self.watermark = 0
        self.lock = asyncio.Lock()

    @property
    def size(self) -> int:
        """Styles indexed."""
        return sum(matrix.alive for matrix in self.matrices.values())

    async def refresh(self, session: AsyncSession) -> None:
        async with self.lock:
            newest = await session.scalar(select(func.max(Revision.id)))
            if newest is None or newest <= self.watermark:
                return  # nothing new (one primary-key lookup)
            after = self.watermark - _ID_MARGIN
            while True:
                statement = (
                    select(Revision.id, Revision.style_id, Revision.version, Revision.number, Revision.levels)
                    .where(Revision.id > after)
                    .order_by(Revision.id)
                    .limit(_LOAD_CHUNK)
                )
                rows = (await session.execute(statement)).all()
                if not rows:
                    return
                if len(rows) < _INLINE_ROWS:
                    self._ingest(rows)
                else:
                    await asyncio.to_thread(self._ingest, rows)
                if len(rows) < _LOAD_CHUNK:
                    return
                after = rows[-1][0]

    def _ingest(self, rows: list) -> None:
        """Fold revisions (id, style id, version, number, levels) in: each style keeps its highest number."""
        revision_ids, style_ids, versions, numbers, blobs = zip(*rows, strict=True)
        revision_ids, style_ids = np.asarray(revision_ids, dtype=np.int64), np.asarray(style_ids, dtype=np.int64)
        versions, numbers = np.asarray(versions, dtype=np.int16), np.asarray(numbers, dtype=np.int32)
        levels = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(-1, LATENT_DIM)
        self.watermark = max(self.watermark, int(revision_ids.max()))
        # The highest-numbered row per style in this batch, then only those newer than what is indexed.
        order = np.lexsort((numbers, style_ids))
        last = np.append(style_ids[order][1:] != style_ids[order][:-1], True)
        pick = order[last]
        self._fit(int(style_ids.max()) + 1)
        pick = pick[numbers[pick] > self.head_number[style_ids[pick]]]
        if pick.size == 0:
            return
        superseded = style_ids[pick][self.head_number[style_ids[pick]] > 0]
        for version in np.unique(self.head_version[superseded]):
            moved = superseded[self.head_version[superseded] == version]
            self.matrices[int(version)].retire(self.head_slot[moved])
        for version in np.unique(versions[pick]):
            rows_of_version = pick[versions[pick] == version]
            matrix = self.matrices.setdefault(int(version), _VersionMatrix())
            ids = style_ids[rows_of_version]
            self.head_slot[ids] = matrix.append(ids, revision_ids[rows_of_version], levels[rows_of_version])
            self.head_version[ids] = version
            self.head_number[ids] = numbers[rows_of_version]
        for matrix in self.matrices.values():
            if matrix.needs_compacting():
                ids, slots = matrix.compact()
                self.head_slot[ids] = slots

    def _fit(self, length: int) -> None:
        if length > len(self.head_number):
            capacity = max(length, 2 * len(self.head_number))
            for name in ("head_number", "head_version", "head_slot"):
                array = getattr(self, name)
                bigger = np.zeros(capacity, dtype=array.dtype)
                bigger[: len(array)] = array
                setattr(self, name, bigger)

    async def nearest(self, code: StyleCode, count: int) -> list[tuple[int, int, float, np.ndarray]]:
        """(style id, revision id, squared level distance, levels) of the `count` nearest head revisions."""
        async with self.lock:
            matrix = self.matrices.get(code.version)
            if matrix is None:
                return []
            slots, distances = matrix.nearest(code.levels, count)
            levels = matrix.vectors[slots].astype(np.uint8)  # a copy: rows stay valid after the lock is released
            return list(
                zip(
                    matrix.style_ids[slots].tolist(),
                    matrix.revision_ids[slots].tolist(),
                    distances.tolist(),
                    levels,
                    strict=True,
                )
            )


_indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def latent_index(session: AsyncSession) -> LatentIndex:
    engine = session.get_bind()
    index = _indexes.get(engine)
    if index is None:
        index = _indexes[engine] = LatentIndex()
    return index


async def nearest_visible(
    session: AsyncSession, code: StyleCode, visible: ColumnElement[bool], k: int, exclude_style_id: int | None
) -> list[tuple[Style, int, str, float]]:
    """(style, head revision id, its code, squared level distance) of the `k` nearest styles for which
    `visible` holds, nearest first (ties: lower style id), exact."""
    index = latent_index(session)
    await index.refresh(session)
    wanted = k + (exclude_style_id is not None)
    fetch = 2 * wanted + 8  # most styles are public: one round usually suffices
    styles: dict[int, Style] = {}  # visible candidates
    checked: set[int] = set()  # candidates whose visibility was looked up, in this or an earlier round
    while True:
        candidates = await index.nearest(code, fetch)
        new_ids = [style_id for style_id, _, _, _ in candidates if style_id not in checked]
        for start in range(0, len(new_ids), _LOOKUP_CHUNK):
            chunk = new_ids[start : start + _LOOKUP_CHUNK]
            styles.update((s.id, s) for s in await session.scalars(select(Style).where(Style.id.in_(chunk), visible)))
        checked.update(new_ids)
        found = [
            (sid, rid, d2, levels) for sid, rid, d2, levels in candidates if sid in styles and sid != exclude_style_id
        ]
        # Enough visible neighbours among the nearest candidates, or nothing further to look at: exact.
        if len(found) >= k or len(candidates) < fetch:
            break
        fetch *= 4
    return [
        (styles[sid], rid, StyleCode(tuple(levels.tolist()), code.version).canonical, d2)
        for sid, rid, d2, levels in found[:k]
    ]
