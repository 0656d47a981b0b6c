"""Scale-out dispatch over Redis Streams: any number of bot processes and `python -m bot.worker` processes.

Layout (every key starts with `prefix`, default `stylecodes`)::

    {p}:jobs:v{N}        stream, one per encoder version; consumer group "workers". Entry: job JSON.
    {p}:events:{job_id}  stream of the job's events (queued, started, progress, done/failed). Outlives the
                         job by `result_ttl_s`, so a late listener (a restarted bot) still reads the result.
    {p}:job:{job_id}     hash: state (queued/running/done/failed), worker, user_id, version, submitted_at
    {p}:active           set of job ids queued or running, for the global cap
    {p}:user:{user_id}   set of that user's job ids queued or running, for the per-user limit
    {p}:waiting:v{N}     sorted set of job ids not yet started (score = submit order), for queue positions
    {p}:seq              submit counter

A worker joins the "workers" group of each version it serves, so the version digit routes the work.
Submitting (limits checked, job queued) is one Lua script, and finishing (result published, job acked,
limits released) is another, so the cap and the per-user limit hold across processes and hosts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from bot import metrics
from bot.dispatch.base import DispatchLimits, JobHandle
from bot.jobs import (
    Job,
    JobEvent,
    JobFailed,
    QueueFullError,
    UserJobLimitError,
    event_from_dict,
    event_to_dict,
    log_job_event,
)

log = logging.getLogger(__name__)

GROUP = "workers"
DEFAULT_JOB_TTL_S = 7 * 24 * 3600  # an unfinished job's records; far beyond any queue wait
DEFAULT_RESULT_TTL_S = 24 * 3600  # a finished job's events, for bots that restart and come back for them


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "stylecodes"

    def stream(self, version: int) -> str:
        return f"{self.prefix}:jobs:v{version}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    def user(self, user_id: int) -> str:
        return f"{self.prefix}:user:{user_id}"

    def waiting(self, version: int) -> str:
        return f"{self.prefix}:waiting:v{version}"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"


# KEYS: active, user, waiting, seq, job, events, stream
# ARGV: job_id, queue_cap, user_limit, job_json, user_id, version, submitted_at, ttl_s
# -> {position} or {-1} queue full, {-2} user limit, {-3} job id already used
SUBMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[5]) == 1 then return {-3} end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {-1} end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {-2} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
local position = redis.call('ZCARD', KEYS[3])
redis.call('HSET', KEYS[5], 'state', 'queued', 'user_id', ARGV[5], 'version', ARGV[6], 'submitted_at', ARGV[7])
redis.call('EXPIRE', KEYS[5], ARGV[8])
redis.call('XADD', KEYS[6], '*', 'event', '{"kind": "queued", "position": ' .. position .. '}')
redis.call('EXPIRE', KEYS[6], ARGV[8])
redis.call('XADD', KEYS[7], '*', 'job', ARGV[4], 'submitted_at', ARGV[7])
return {position}
"""

# KEYS: active, user, waiting, job, events, stream
# ARGV: job_id, group, message_id, state, event_json, result_ttl_s
# The result is published and the limits released in the same step as the XACK.
FINISH_SCRIPT = """
redis.call('XADD', KEYS[5], '*', 'event', ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('HSET', KEYS[4], 'state', ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('XACK', KEYS[6], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[6], ARGV[3])
return 1
"""


def encode_event(event: JobEvent) -> str:
    return json.dumps(event_to_dict(event), separators=(",", ":"))


class RedisDispatcher:
    """The bot side: queues jobs in the version's stream and follows each job's event stream."""

    def __init__(
        self,
        *,
        redis: Redis,
        limits: DispatchLimits,
        keys: RedisKeys | None = None,
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        poll_block_ms: int = 5000,
    ) -> None:
        self.redis = redis  # decode_responses=True
        self.limits = limits
        self.keys = keys or RedisKeys()
        self.job_ttl_s = job_ttl_s
        self.poll_block_ms = poll_block_ms
        self._submit = redis.register_script(SUBMIT_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, limits: DispatchLimits, **kwargs) -> RedisDispatcher:
        return cls(redis=Redis.from_url(url, decode_responses=True), limits=limits, **kwargs)

    async def start(self) -> None:
        await self.redis.ping()  # fail at startup, with the URL's error, not at the first job

    async def close(self) -> None:
        await self.redis.aclose()

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
            ],
            args=[
                job.job_id,
                self.limits.queue_cap,
                self.limits.max_jobs_per_user,
                json.dumps(job.to_dict(), separators=(",", ":")),
                job.user_id,
                job.version,
                repr(time.time()),
                self.job_ttl_s,
            ],
        )
        if position == -1:
            metrics.JOBS_REJECTED.labels("queue_full").inc()
            log_job_event("rejected", job.job_id, reason="queue_full", user_id=job.user_id)
            raise QueueFullError(self.limits.queue_cap)
        if position == -2:
            metrics.JOBS_REJECTED.labels("user_limit").inc()
            log_job_event("rejected", job.job_id, reason="user_limit", user_id=job.user_id)
            raise UserJobLimitError(self.limits.max_jobs_per_user)
        if position == -3:
            raise ValueError(f"job {job.job_id} was already submitted")
        metrics.JOBS_SUBMITTED.labels(job.kind, str(job.version)).inc()
        log_job_event("queued", job.job_id, kind=job.kind, version=job.version, user_id=job.user_id, position=position)
        return JobHandle(job.job_id, int(position), lambda: self.follow(job.job_id))

    async def resume(self, job_id: str) -> JobHandle | None:
        """A handle replaying the job's events from the start; None when Redis no longer knows the job."""
        if not await self.redis.exists(self.keys.events(job_id)):
            return None
        return JobHandle(job_id, 0, lambda: self.follow(job_id))

    async def follow(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events from its first; ends when its record vanishes (expired or Redis wiped)."""
        key = self.keys.events(job_id)
        last_id = "0-0"
        while True:
            response = await self.redis.xread({key: last_id}, block=self.poll_block_ms, count=100)
            if not response:
                if not await self.redis.exists(key):
                    yield JobFailed("The job's record disappeared from the queue (Redis was reset).", JobFailed.LOST)
                    return
                continue
            for _stream, entries in response:
                for entry_id, fields in entries:
                    last_id = entry_id
                    yield event_from_dict(json.loads(fields["event"]))
