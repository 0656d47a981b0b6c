"""Scale-out dispatch over Redis Streams, the bot side: any number of bot processes queue jobs and follow
their events, and any number of `python -m bot.worker` processes run them. Both sides speak the protocol in
`bot.protocol.streams` (keys, Lua scripts, events on the wire).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.dispatch.base import FollowedElsewhere, JobHandle, record_latency
from bot.jobs import (
    TERMINAL_EVENTS,
    Job,
    JobEvent,
    JobFailed,
    JobQueued,
    NoWorkerError,
    QueueFullError,
    UserJobLimitError,
    event_from_dict,
    log_job_event,
)
from bot.protocol.limits import DispatchLimits
from bot.protocol.periodic import Periodic
from bot.protocol.streams import (
    CLAIM_FOLLOWER_SCRIPT,
    DEFAULT_JOB_TTL_S,
    DEFAULT_RESULT_TTL_S,
    DELIVERED_SCRIPT,
    FINISH_SCRIPT,
    FOLLOWER_TTL_S,
    GROUP,
    RENEW_FOLLOWER_SCRIPT,
    SUBMIT_SCRIPT,
    WORKER_ALIVE_S,
    RedisKeys,
    encode_event,
    finish_keys,
    live_versions,
)
from bot.protocol.usage import advance_usage, record_end, usage_status

log = logging.getLogger(__name__)

POSITION_CHECK_S = 2.0  # while a job waits, how often its follower looks up its place in the queue
NO_WORKER_REASON = (
    "No worker for model version {version} was running for {minutes} minutes while your job waited, so it was "
    "given up. Please try again later."
)


class RedisDispatcher:
    """The bot side: queues jobs in the version's stream and follows each job's event stream.

    Each job has one follower, the bot process that submitted it (or adopted it after a restart), which
    holds a lease in Redis while it follows; `adopt` refuses a job whose follower is alive, so two bot
    processes never post one result twice. A background sweep (started by `start`) fails jobs that have
    waited `limits.max_queue_wait_s` while no live worker serves their version.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        limits: DispatchLimits,
        keys: RedisKeys | None = None,
        session_factory: async_sessionmaker[AsyncSession] | None = None,
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        poll_block_ms: int = 5000,
        follower_ttl_s: float = FOLLOWER_TTL_S,
        worker_alive_s: float = WORKER_ALIVE_S,
        sweep_interval_s: float = 15.0,
    ) -> None:
        self.redis = redis  # decode_responses=True
        self.limits = limits
        self.keys = keys or RedisKeys()
        self.session_factory = session_factory  # usage rows of jobs the sweep gives up
        self.job_ttl_s = job_ttl_s
        self.result_ttl_s = result_ttl_s
        self.poll_block_ms = poll_block_ms
        self.follower_ttl_s = follower_ttl_s
        self.worker_alive_s = worker_alive_s
        self.token = uuid.uuid4().hex  # this process, as a follower
        self._submit = redis.register_script(SUBMIT_SCRIPT)
        self._finish = redis.register_script(FINISH_SCRIPT)
        self._claim_follower = redis.register_script(CLAIM_FOLLOWER_SCRIPT)
        self._renew_follower = redis.register_script(RENEW_FOLLOWER_SCRIPT)
        self._delivered = redis.register_script(DELIVERED_SCRIPT)
        self._sweeper = Periodic(self.sweep, sweep_interval_s, name="stylecodes-redis-sweep", run_first=True)

    @classmethod
    def from_url(cls, url: str, *, limits: DispatchLimits, **kwargs) -> RedisDispatcher:
        return cls(redis=Redis.from_url(url, decode_responses=True), limits=limits, **kwargs)

    async def start(self) -> None:
        await self.redis.ping()  # fail at startup, with the URL's error, not at the first job
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()
        await self.redis.aclose()

    # --- Submitting --------------------------------------------------------------------------------

    async def submit(self, job: Job) -> JobHandle:
        self.limits.check_served(job.version)
        keys = self.keys
        (position,) = await self._submit(
            keys=[
                keys.active,
                keys.user(job.user_id),
                keys.waiting(job.version),
                keys.seq,
                keys.job(job.job_id),
                keys.events(job.job_id),
                keys.stream(job.version),
                keys.follower(job.job_id),
                keys.workers(job.version),
            ],
            args=[
                job.job_id,
                self.limits.queue_cap,
                self.limits.max_jobs_per_user if job.limited_per_user else 0,
                json.dumps(job.to_dict(), separators=(",", ":")),
                job.user_id,
                job.version,
                repr(time.time()),
                self.job_ttl_s,
                self.token,
                int(self.follower_ttl_s * 1000),
                int(self.worker_alive_s * 1000),
                keys.job(""),
                job.kind,
            ],
        )
        rejected = {-1: "queue_full", -2: "user_limit", -4: "no_worker"}.get(position)
        if rejected is not None:
            metrics.JOBS_REJECTED.labels(rejected).inc()
            log_job_event("rejected", job.job_id, reason=rejected, user_id=job.user_id, version=job.version)
            if position == -1:
                raise QueueFullError(self.limits.queue_cap)
            if position == -2:
                raise UserJobLimitError(self.limits.max_jobs_per_user)
            raise NoWorkerError(job.version)
        if position == -3:
            raise ValueError(f"job {job.job_id} was already submitted")
        metrics.JOBS_SUBMITTED.labels(job.kind, str(job.version)).inc()
        metrics.QUEUE_DEPTH.labels(str(job.version)).set(position)  # the jobs now waiting for this version
        log_job_event("queued", job.job_id, kind=job.kind, version=job.version, user_id=job.user_id, position=position)
        return JobHandle(job.job_id, int(position), lambda: self.follow(job.job_id, lease=True))

    # --- Following ---------------------------------------------------------------------------------

    async def resume(self, job_id: str) -> JobHandle | None:
        """A listener replaying the job's events from the start; None when Redis no longer knows the job."""
        if not await self.redis.exists(self.keys.events(job_id)):
            return None
        return JobHandle(job_id, 0, lambda: self.follow(job_id))

    async def adopt(self, job_id: str) -> JobHandle | None:
        """Take over following a job whose bot process is gone (restart recovery); see `Dispatcher.adopt`."""
        if not await self.redis.exists(self.keys.events(job_id)):
            return None
        claimed = await self._claim_follower(
            keys=[self.keys.follower(job_id)], args=[self.token, int(self.follower_ttl_s * 1000)]
        )
        if claimed == -1:
            raise FollowedElsewhere(job_id, delivered=True)
        if claimed == 0:
            raise FollowedElsewhere(job_id, retry_after_s=self.follower_ttl_s / 3)
        return JobHandle(job_id, 0, lambda: self.follow(job_id, lease=True))

    async def follow(self, job_id: str, *, lease: bool = False) -> AsyncIterator[JobEvent]:
        """The job's events from its first; ends when its record vanishes (expired or Redis wiped).

        `lease`: this is the job's follower. It renews its lease while it follows, marks the job delivered
        when it hands over the outcome (and records the job's latency, once per job), and releases the
        lease if it stops before that, so another bot process can adopt the job at once.
        """
        key = self.keys.events(job_id)
        follower = self.keys.follower(job_id)
        ttl_ms = int(self.follower_ttl_s * 1000)
        block_ms = max(1, min(self.poll_block_ms, ttl_ms // 3))
        last_id = "0-0"
        renewed = time.monotonic()
        handed_over = False
        position: int | None = None  # while the job waits: the place it was last told; None once it started
        try:
            while True:
                waiting = position is not None
                wait_ms = min(block_ms, int(POSITION_CHECK_S * 1000)) if waiting else block_ms
                response = await self.redis.xread({key: last_id}, block=wait_ms, count=100)
                if lease and time.monotonic() - renewed >= self.follower_ttl_s / 3:
                    await self._renew_follower(keys=[follower], args=[self.token, ttl_ms])
                    renewed = time.monotonic()
                if waiting and not response:  # nothing happened: the jobs ahead may have started
                    now_at = await self._queue_position(job_id)
                    if now_at is not None and now_at != position:
                        position = now_at
                        yield JobQueued(now_at)
                if not response:
                    if not await self.redis.exists(key):
                        handed_over = True
                        yield JobFailed(
                            "The job's record disappeared from the queue (Redis was reset).", JobFailed.LOST
                        )
                        return
                    continue
                for _stream, entries in response:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        event = event_from_dict(json.loads(fields["event"]))
                        position = event.position if isinstance(event, JobQueued) else None
                        if lease and isinstance(event, TERMINAL_EVENTS):
                            handed_over = True
                            await self._hand_over(job_id, event)
                        yield event
        finally:
            if lease and not handed_over:  # stopped early (shutdown): let another bot adopt it now
                with contextlib.suppress(Exception):
                    await self._renew_follower(keys=[follower], args=[self.token, ""])

    async def _queue_position(self, job_id: str) -> int | None:
        """The job's place among the jobs waiting for its version (1 = next); None once it left the queue."""
        version = await self.redis.hget(self.keys.job(job_id), "version")
        if version is None:
            return None
        rank = await self.redis.zrank(self.keys.waiting(version), job_id)
        return None if rank is None else rank + 1

    async def _hand_over(self, job_id: str, event: JobEvent) -> None:
        first = await self._delivered(
            keys=[self.keys.follower(job_id), self.keys.job(job_id)], args=[self.result_ttl_s]
        )
        if first:
            kind, version, submitted_at = first
            if kind and version:
                record_latency(kind, version, event, float(submitted_at) if submitted_at else None)

    # --- Giving up on jobs no worker will take -----------------------------------------------------

    async def sweep(self) -> list[str]:
        """Refresh the queue-depth gauge; fail, with the reason, every job queued longer than
        `limits.max_queue_wait_s` while no live worker serves its version. Returns the ids given up."""
        keys = self.keys
        ids = sorted(await self.redis.smembers(keys.active))
        fields = ("state", "version", "submitted_at", "user_id", "entry", "kind")
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(keys.job(job_id), fields)
            for version in self.limits.served_versions:
                pipe.zcard(keys.waiting(version))
            replies = await pipe.execute()
        for version, depth in zip(self.limits.served_versions, replies[len(ids) :], strict=True):
            metrics.QUEUE_DEPTH.labels(str(version)).set(depth)
        now = time.time()
        stale = [
            (job_id, dict(zip(fields, row, strict=True)))
            for job_id, row in zip(ids, replies[: len(ids)], strict=True)
            if row[0] == "queued" and row[1] and row[2] and now - float(row[2]) >= self.limits.max_queue_wait_s
        ]
        if not stale:
            return []
        live = await live_versions(
            self.redis, keys, {int(job["version"]) for _, job in stale}, alive_s=self.worker_alive_s
        )
        given_up = []
        for job_id, job in stale:
            if int(job["version"]) not in live and await self._give_up(job_id, job):
                given_up.append(job_id)
        return given_up

    async def _give_up(self, job_id: str, job: dict) -> bool:
        version = job["version"]
        minutes = max(1, round(self.limits.max_queue_wait_s / 60))
        event = JobFailed(NO_WORKER_REASON.format(version=version, minutes=minutes), JobFailed.NO_WORKER)
        if self.session_factory is not None:  # the history first: a worker that gets the job later sees it failed
            if await usage_status(self.session_factory, job_id) not in (None, "queued"):
                return False  # a worker has started it after all
            if await advance_usage(self.session_factory, job_id, "failed", error=event.reason) not in (None, "failed"):
                return False
        stream, _, message_id = (job["entry"] or "").partition(" ")
        applied = await self._finish(
            keys=finish_keys(self.keys, job_id, job["user_id"], version, stream or self.keys.stream(int(version))),
            args=[job_id, GROUP, message_id, "failed", encode_event(event), self.result_ttl_s, "queued"],
        )
        if applied:
            record_end(job_id, job["kind"] or "unknown", version, event)
        return bool(applied)
