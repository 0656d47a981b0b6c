"""A worker's Redis calls, as one consumer of the "workers" group on the streams of the versions it serves:
the entries it reads, claims, gives back, finishes and drops, the events it publishes, and its presence
(heartbeat, the entries it holds, queue depth). `RedisWorker` decides what to do with each entry; this
module only speaks the protocol of `bot.protocol.streams`.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.jobs import Job, JobEvent, JobFailed, JobStarted, log_job_event
from bot.protocol.streams import FINISH_SCRIPT, GROUP, RETURN_SCRIPT, RedisKeys, beat, encode_event, finish_keys

log = logging.getLogger(__name__)

DEPARTED_AFTER_S = 24 * 3600  # a consumer silent this long, holding nothing, belonged to a stopped process


@dataclass
class Delivery:
    """A job this worker holds: where it came from (for the XACK), and how often it was delivered."""

    job: Job
    stream: str
    message_id: str
    submitted_at: float | None
    fields: dict
    deliveries: int = 1


def default_consumer_name() -> str:
    """host:pid:random, unique per process, and the pid lets an operator (or a test) find the process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class StreamConsumer:
    def __init__(self, redis: Redis, keys: RedisKeys, name: str, versions: Iterable[int], *, result_ttl_s: int):
        self.redis = redis  # decode_responses=True
        self.keys = keys
        self.name = name
        self.versions = tuple(versions)
        self.result_ttl_s = result_ttl_s
        self._finish = redis.register_script(FINISH_SCRIPT)
        self._return = redis.register_script(RETURN_SCRIPT)

    @property
    def streams(self) -> dict[int, str]:
        return {version: self.keys.stream(version) for version in self.versions}

    @property
    def returned_streams(self) -> dict[int, str]:
        return {version: self.keys.returned(version) for version in self.versions}

    @property
    def all_streams(self) -> list[str]:
        return [*self.returned_streams.values(), *self.streams.values()]  # returned first: older jobs

    def version_of(self, stream: str) -> int:
        for version in self.versions:
            if stream in (self.keys.stream(version), self.keys.returned(version)):
                return version
        raise ValueError(f"{stream} is not a stream this worker reads")

    # --- Membership --------------------------------------------------------------------------------

    async def join(self) -> None:
        """Join the consumer group of every served version (creating streams and groups when missing)."""
        for stream in self.all_streams:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            # Visible in XINFO CONSUMERS from now on, not only after its first delivery.
            await self.redis.xgroup_createconsumer(stream, GROUP, self.name)

    async def beat(self) -> None:
        """Live for the bots: they accept jobs for these versions."""
        await beat(self.redis, self.keys, self.name, self.streams, forget_after_s=DEPARTED_AFTER_S)

    async def leave(self) -> None:
        """No longer live: bots stop queueing for us (when no other worker serves the version)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for version in self.streams:
                pipe.zrem(self.keys.workers(version), self.name)
            await pipe.execute()

    async def forget_departed_consumers(self) -> None:
        """Drop consumers of stopped processes: nothing pending, silent for `DEPARTED_AFTER_S` (else XINFO grows)."""
        for stream in self.all_streams:
            for consumer in await self.redis.xinfo_consumers(stream, GROUP):
                idle_s = consumer["idle"] / 1000
                if consumer["name"] != self.name and consumer["pending"] == 0 and idle_s > DEPARTED_AFTER_S:
                    await self.redis.xgroup_delconsumer(stream, GROUP, consumer["name"])

    # --- Entries -----------------------------------------------------------------------------------

    async def read(self, streams: list[str], *, count: int, block_ms: int | None) -> list[tuple[str, str, dict]]:
        """New entries of `streams` for this consumer, as (stream, message id, fields)."""
        response = await self.redis.xreadgroup(
            GROUP, self.name, {stream: ">" for stream in streams}, count=count, block=block_ms
        )
        return [(stream, message_id, fields) for stream, entries in response or [] for message_id, fields in entries]

    async def claim_idle(self, stream: str, min_idle_ms: int) -> AsyncIterator[tuple[list, list[str]]]:
        """Entries pending on other consumers for at least `min_idle_ms`, claimed page by page (XAUTOCLAIM):
        each page's (message id, fields) pairs, and the ids of pending entries deleted from the stream."""
        start = "0-0"
        while True:
            next_start, messages, deleted = await self.redis.xautoclaim(
                stream, GROUP, self.name, min_idle_time=min_idle_ms, start_id=start, count=50
            )
            yield messages, deleted or []
            if next_start in ("0-0", b"0-0"):
                return
            start = next_start

    async def delivery_count(self, stream: str, message_id: str) -> int:
        pending = await self.redis.xpending_range(stream, GROUP, min=message_id, max=message_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    async def give_back(self, delivery: Delivery) -> None:
        """A copy at the end of the version's `returned` stream for any worker; the entry acked and deleted."""
        job = delivery.job
        version = self.version_of(delivery.stream)
        new_id = await self._return(
            keys=[delivery.stream, self.keys.returned(version), self.keys.job(job.job_id)],
            args=[
                GROUP,
                delivery.message_id,
                self.name,
                delivery.fields["job"],
                job.job_id,
                delivery.fields.get("submitted_at") or "",
                delivery.deliveries - 1,
            ],
        )
        log_job_event("returned", job.job_id, worker=self.name, entry=new_id or "lost")

    async def finish(
        self, job_id: str, user_id: int | str, version: int | str, stream: str, message_id: str, event: JobEvent
    ) -> None:
        """Publish the job's outcome, release its limits and XACK its entry, in one step."""
        state = "failed" if isinstance(event, JobFailed) else "done"
        await self._finish(
            keys=finish_keys(self.keys, job_id, user_id, version, stream),
            args=[job_id, GROUP, message_id, state, encode_event(event), self.result_ttl_s, ""],
        )

    async def drop(self, stream: str, message_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, message_id)
            pipe.xdel(stream, message_id)
            await pipe.execute()

    # --- Jobs --------------------------------------------------------------------------------------

    async def job_state(self, job_id: str) -> str | None:
        return await self.redis.hget(self.keys.job(job_id), "state")

    async def job_record(self, job_id: str) -> list[str | None]:
        """The job's user_id, version, kind and state (None each when Redis has no record of it)."""
        return await self.redis.hmget(self.keys.job(job_id), "user_id", "version", "kind", "state")

    async def job_of_entry(self, stream: str, message_id: str) -> str | None:
        """The unfinished job whose record names this entry (the `entry` each record keeps)."""
        ids = sorted(await self.redis.smembers(self.keys.active))
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "entry")
            entries = await pipe.execute()
        return next((i for i, entry in zip(ids, entries, strict=True) if entry == f"{stream} {message_id}"), None)

    async def publish(self, job: Job, event: JobEvent) -> None:
        """Progress and `JobStarted` (terminal events go through `finish`)."""
        keys = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            if isinstance(event, JobStarted):
                pipe.hset(keys.job(job.job_id), mapping={"state": "running", "worker": self.name})
                pipe.zrem(keys.waiting(job.version), job.job_id)
            pipe.xadd(keys.events(job.job_id), {"event": encode_event(event)})
            await pipe.execute()

    # --- Upkeep ------------------------------------------------------------------------------------

    async def keep(self, held: Iterable[Delivery]) -> None:
        """Reset the idle time of the entries this consumer holds (XCLAIM JUSTID), so nobody reclaims them."""
        by_stream: dict[str, set[str]] = {}
        for delivery in held:
            by_stream.setdefault(delivery.stream, set()).add(delivery.message_id)
        for stream, ids in by_stream.items():
            pending = await self.redis.xpending_range(
                stream, GROUP, min="-", max="+", count=1000, consumername=self.name
            )
            ours = [entry["message_id"] for entry in pending if entry["message_id"] in ids]
            if ours:
                await self.redis.xclaim(stream, GROUP, self.name, min_idle_time=0, message_ids=ours, justid=True)

    async def queue_depths(self) -> dict[int, int]:
        """Jobs waiting per served version."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for version in self.versions:
                pipe.zcard(self.keys.waiting(version))
            depths = await pipe.execute()
        return dict(zip(self.versions, depths, strict=True))
