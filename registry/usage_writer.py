"""Usage rows from concurrent jobs share one INSERT and one commit (group commit).

`record_usage` is the bot's hottest write: one row per /imagine. Written one transaction per row, each
costs three round trips (BEGIN, INSERT, COMMIT), a commit flush on the server, and about half a
millisecond of SQLAlchemy CPU on the client; on a 2-core machine that capped PostgreSQL at about
1,000-1,500 rows/s. Here every engine has one writer: callers queue their validated row and wait;
the writer takes everything queued, inserts it with one multi-row
``INSERT ... ON CONFLICT (job_id) DO NOTHING RETURNING id, job_id`` (in autocommit: one round trip,
one transaction, committed when it returns), and only then answers each caller with its id. While a
batch is being written the next one gathers, so batches grow with the load and a lone caller still
goes straight through.

Guarantees (the rows are job records that restart recovery reads):
- a caller's `record_usage` returns only after its row is committed: nothing acknowledged is lost;
- a job id already stored, or repeated in the same batch, is that caller's `DuplicateJobError` only:
  the other rows of the batch are written, and nothing is written twice (the unique job id decides);
- a statement that fails for a row (an integrity error) is retried row by row, so only that row's
  caller sees the error; any other failure (the connection lost, possibly during COMMIT) is raised to
  every caller of the batch, exactly as a single-row insert would have raised it;
- a caller cancelled while its row is still queued takes the row out: it is never written. A row
  already in a batch being written is committed or not with that batch.
"""

from __future__ import annotations

import asyncio
import weakref

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ._sql import dialect_name_of
from .errors import DuplicateJobError
from .models import Usage

BATCH_MAX = 500  # rows per INSERT: well under the bind-parameter limits (25 columns x 500 = 12,500)


def duplicate_job(job_id: str) -> DuplicateJobError:
    return DuplicateJobError(f"A job with id `{job_id}` was already recorded; every job needs a fresh uuid4 hex id.")


async def insert_usages(connection: AsyncConnection, rows: list[dict]) -> dict[str, int]:
    """Insert rows with distinct job ids in one statement; returns job id -> row id for the rows inserted
    (a job id already stored is left out)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if dialect_name_of(connection) == "postgresql" else sqlite
    statement = (
        dialect.insert(Usage.__table__)
        .on_conflict_do_nothing(index_elements=["job_id"])
        .returning(Usage.__table__.c.id, Usage.__table__.c.job_id)
    )
    result = await connection.execute(statement, rows)  # executemany: one multi-row INSERT per page
    return {job_id: usage_id for usage_id, job_id in result.all()}


class UsageWriter:
    """One per engine and event loop: batches the rows of concurrent `record_usage` calls."""

    def __init__(self, engine: AsyncEngine, loop: asyncio.AbstractEventLoop) -> None:
        # One multi-row INSERT is atomic by itself: in autocommit it is one round trip, with no BEGIN and
        # COMMIT of its own, and it is committed (flushed on PostgreSQL) before its result comes back.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.loop = loop
        self._queue: list[tuple[dict, asyncio.Future[int]]] = []
        self._task: asyncio.Task | None = None
        self.batches = 0  # statistics, for benchmarks and tests
        self.rows = 0

    async def insert(self, values: dict) -> int:
        """Queue one row and wait until it is committed; returns its id."""
        entry = (values, self.loop.create_future())
        self._queue.append(entry)
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._drain(), name="registry-usage-writer")
        try:
            return await asyncio.shield(entry[1])
        except asyncio.CancelledError:
            if entry in self._queue:
                self._queue.remove(entry)  # not taken into a batch yet: it is never written
            raise

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
            await self._write(batch)

    async def _write(self, batch: list[tuple[dict, asyncio.Future[int]]]) -> None:
        first: dict[str, tuple[dict, asyncio.Future[int]]] = {}
        for values, future in batch:
            if values["job_id"] in first:
                _settle(future, error=duplicate_job(values["job_id"]))
            else:
                first[values["job_id"]] = (values, future)
        entries = list(first.values())
        try:
            async with self.engine.connect() as connection:
                ids = await insert_usages(connection, [values for values, _ in entries])
        except IntegrityError as exc:
            if len(entries) == 1:
                _settle(entries[0][1], error=exc)
                return
            for entry in entries:  # the statement failed and was rolled back: find whose row it was
                await self._write([entry])
            return
        except BaseException as exc:
            for _, future in entries:
                _settle(future, error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.rows += len(ids)
        for values, future in entries:
            usage_id = ids.get(values["job_id"])
            _settle(future, result=usage_id, error=None if usage_id is not None else duplicate_job(values["job_id"]))


def _settle(future: asyncio.Future, *, result=None, error: BaseException | None = None) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_writers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def usage_writer(session: AsyncSession) -> UsageWriter | None:
    """The writer of the engine `session` is bound to, or None for a session bound to one connection."""
    engine = session.bind
    if not isinstance(engine, AsyncEngine):
        return None
    loop = asyncio.get_running_loop()
    writer = _writers.get(engine.sync_engine)
    if writer is None or writer.loop is not loop:
        writer = _writers[engine.sync_engine] = UsageWriter(engine, loop)
    return writer
