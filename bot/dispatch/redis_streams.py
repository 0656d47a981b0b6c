"""Scale-out dispatch over Redis Streams: any number of bot processes and `python -m bot.worker` processes.

Layout (every key starts with `prefix`, default `stylecodes`)::

    {p}:jobs:v{N}           stream, one per encoder version; consumer group "workers". Entry: job JSON, job id.
    {p}:jobs:v{N}:returned  stream of jobs a worker read but could not fit in its batch, given back for any
                            worker (read before the main stream: they are older)
    {p}:events:{job_id}     stream of the job's events (queued, started, progress, done/failed). Outlives the
                            job by `result_ttl_s`, so a late listener (a restarted bot) still reads the result.
    {p}:job:{job_id}        hash: state (queued/running/done/failed), worker, user_id, version, kind,
                            submitted_at, entry (its stream and entry id)
    {p}:follower:{job_id}   the bot process following the job (a lease it renews), then "delivered"
    {p}:active              set of job ids queued or running, for the global cap
    {p}:user:{user_id}      set of that user's job ids queued or running, for the per-user limit
    {p}:waiting:v{N}        sorted set of job ids not yet started (score = submit order), for queue positions
    {p}:workers:v{N}        sorted set of the workers serving version N (score = their last beat, Redis clock)
    {p}:seq                 submit counter

A worker joins the "workers" group of each version it serves, so the version digit routes the work.
Submitting (live worker, limits, job queued) is one Lua script, and finishing (result published, job acked,
limits released) is another, so the cap and the per-user limit hold across processes and hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from bot import metrics
from bot.dispatch.base import DispatchLimits, FollowedElsewhere, JobHandle, record_latency
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
    event_to_dict,
    log_job_event,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

GROUP = "workers"
DEFAULT_JOB_TTL_S = 7 * 24 * 3600  # an unfinished job's records; far beyond any queue wait
DEFAULT_RESULT_TTL_S = 24 * 3600  # a finished job's events, for bots that restart and come back for them
WORKER_ALIVE_S = 30.0  # a worker that beat within this long is live (it beats every few seconds)
WORKER_BEAT_S = 5.0
FOLLOWER_TTL_S = 30.0  # a follower that stopped renewing for this long is gone: another bot may adopt the job
DELIVERED = "delivered"  # the follower key's value once a bot got the job's outcome
POSITION_CHECK_S = 2.0  # while a job waits, how often its follower looks up its place in the queue
NO_WORKER_REASON = (
    "No worker for model version {version} was running for {minutes} minutes while your job waited, so it was "
    "given up. Please try again later."
)


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "stylecodes"

    def stream(self, version: int) -> str:
        return f"{self.prefix}:jobs:v{version}"

    def returned(self, version: int) -> str:
        return f"{self.prefix}:jobs:v{version}:returned"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def follower(self, job_id: str) -> str:
        return f"{self.prefix}:follower:{job_id}"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    def user(self, user_id: int | str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def waiting(self, version: int | str) -> str:
        return f"{self.prefix}:waiting:v{version}"

    def workers(self, version: int | str) -> str:
        return f"{self.prefix}:workers:v{version}"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"


# Milliseconds on the Redis server's clock, so hosts whose clocks differ agree on who is live.
_NOW_MS = "local t = redis.call('TIME'); local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: active, user, waiting, seq, job, events, stream, follower, workers
# ARGV: job_id, queue_cap, user_limit (0: the job does not count toward it), job_json, user_id, version,
#       submitted_at, ttl_s, follower_token, follower_ttl_ms, worker_alive_ms, job_key_prefix, kind
# -> {position} or {-1} queue full, {-2} user limit, {-3} job id already used, {-4} no live worker
SUBMIT_SCRIPT = (
    _NOW_MS
    + """
local function prune(set)  -- ids whose job record expired hold no slot any more
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', ARGV[12] .. id) == 0 then redis.call('SREM', set, id) end
  end
end
local function full(set, limit)
  if redis.call('SCARD', set) < limit then return false end
  prune(set)
  return redis.call('SCARD', set) >= limit
end
if redis.call('EXISTS', KEYS[5]) == 1 then return {-3} end
if redis.call('ZCOUNT', KEYS[9], now_ms - tonumber(ARGV[11]), '+inf') == 0 then return {-4} end
if full(KEYS[1], tonumber(ARGV[2])) then return {-1} end
local limited = tonumber(ARGV[3]) > 0
if limited and full(KEYS[2], tonumber(ARGV[3])) then return {-2} end
redis.call('SADD', KEYS[1], ARGV[1])
if limited then redis.call('SADD', KEYS[2], ARGV[1]) end
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
local position = redis.call('ZCARD', KEYS[3])
local entry = redis.call('XADD', KEYS[7], '*', 'job', ARGV[4], 'job_id', ARGV[1], 'submitted_at', ARGV[7])
redis.call('HSET', KEYS[5], 'state', 'queued', 'user_id', ARGV[5], 'version', ARGV[6], 'kind', ARGV[13],
           'submitted_at', ARGV[7], 'entry', KEYS[7] .. ' ' .. entry)
redis.call('EXPIRE', KEYS[5], ARGV[8])
redis.call('XADD', KEYS[6], '*', 'event', '{"kind": "queued", "position": ' .. position .. '}')
redis.call('EXPIRE', KEYS[6], ARGV[8])
redis.call('SET', KEYS[8], ARGV[9], 'PX', ARGV[10])
return {position}
"""
)

# KEYS: active, user, waiting, job, events, stream
# ARGV: job_id, group, message_id ('' = no entry to ack), state, event_json, result_ttl_s,
#       expected_state ('' = any: a worker's result; 'queued': give up a job nobody started)
# The result is published and the limits released in the same step as the XACK. -> 1, or 0 when not applied.
FINISH_SCRIPT = """
if ARGV[7] ~= '' and redis.call('HGET', KEYS[4], 'state') ~= ARGV[7] then return 0 end
redis.call('XADD', KEYS[5], '*', 'event', ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('HSET', KEYS[4], 'state', ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then
  redis.pcall('XACK', KEYS[6], ARGV[2], ARGV[3])  -- pcall: a job given up may never have met a worker (no group)
  redis.call('XDEL', KEYS[6], ARGV[3])
end
return 1
"""

# KEYS: workers:v{N} of every version the worker serves. ARGV: consumer, forget_after_ms
BEAT_SCRIPT = (
    _NOW_MS
    + """
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now_ms, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - tonumber(ARGV[2]))
end
return now_ms
"""
)

# KEYS: workers:v{N} for each version asked about. ARGV: worker_alive_ms -> live workers per key
LIVE_SCRIPT = (
    _NOW_MS
    + """
local counts = {}
for i, key in ipairs(KEYS) do counts[i] = redis.call('ZCOUNT', key, now_ms - tonumber(ARGV[1]), '+inf') end
return counts
"""
)

# Follower lease. KEYS: follower. ARGV: token, ttl_ms. -> 1 ours now, 0 another live follower, -1 delivered
CLAIM_FOLLOWER_SCRIPT = f"""
local holder = redis.call('GET', KEYS[1])
if holder == '{DELIVERED}' then return -1 end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: follower. ARGV: token, ttl_ms ('' = release)
RENEW_FOLLOWER_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
# KEYS: follower, job. ARGV: result_ttl_s -> {kind, version, submitted_at} the first time, else nil
DELIVERED_SCRIPT = f"""
if redis.call('GET', KEYS[1]) == '{DELIVERED}' then return false end
redis.call('SET', KEYS[1], '{DELIVERED}', 'EX', ARGV[1])
return redis.call('HMGET', KEYS[2], 'kind', 'version', 'submitted_at')
"""


def encode_event(event: JobEvent) -> str:
    return json.dumps(event_to_dict(event), separators=(",", ":"))


async def beat(redis: Redis, keys: RedisKeys, consumer: str, versions, *, forget_after_s: float = 24 * 3600) -> None:
    """Count `consumer` as a live worker of `versions` for the next `WORKER_ALIVE_S` seconds.

    `RedisWorker` beats from its start on; a worker process may beat while it loads its models, so bots keep
    queueing jobs for it meanwhile. Entries silent for `forget_after_s` are dropped.
    """
    versions = list(versions)
    if versions:
        workers = [keys.workers(version) for version in versions]
        await redis.eval(BEAT_SCRIPT, len(workers), *workers, consumer, int(forget_after_s * 1000))


async def live_versions(redis: Redis, keys: RedisKeys, versions, *, alive_s: float = WORKER_ALIVE_S) -> set[int]:
    """The versions among `versions` that at least one worker served within the last `alive_s` seconds."""
    versions = sorted(set(versions))
    if not versions:
        return set()
    counts = await redis.eval(LIVE_SCRIPT, len(versions), *[keys.workers(v) for v in versions], int(alive_s * 1000))
    return {version for version, count in zip(versions, counts, strict=True) if int(count) > 0}


class Periodic:
    """`work()` every `interval_s` in a background task (first at once when `run_first`) until `stop()`.

    `stop()` sets an event the task waits on rather than relying on cancelling it: a cancel that lands
    inside a redis-py command can be swallowed there, and a cancelled loop would then run on (seen in the
    tests: a worker's heartbeat kept beating for the 30 s its stop waited). Failures of `work` are logged
    and the next turn tries again.
    """

    def __init__(self, work: Callable[[], Awaitable[object]], interval_s: float, *, name: str, run_first: bool = False):
        self.work = work
        self.interval_s = interval_s
        self.name = name
        self.run_first = run_first
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        if not self.run_first:
            await self._pause()
        while not self._stop.is_set():
            try:
                await self.work()
            except Exception:  # Redis or the database briefly away: the next turn tries again
                log.warning("%s failed", self.name, exc_info=True)
            await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end, and wait for it (it ends after its current turn); cancel it past `timeout_s`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        _done, pending = await asyncio.wait([task], timeout=timeout_s)
        for late in pending:
            late.cancel()


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
        from bot.worker.runner import advance_usage, record_end, usage_status

        version = job["version"]
        minutes = max(1, round(self.limits.max_queue_wait_s / 60))
        event = JobFailed(NO_WORKER_REASON.format(version=version, minutes=minutes), JobFailed.NO_WORKER)
        if self.session_factory is not None:  # the history first: a worker that gets the job later sees it failed
            if await usage_status(self.session_factory, job_id) not in (None, "queued"):
                return False  # a worker has started it after all
            if await advance_usage(self.session_factory, job_id, "failed", error=event.reason) not in (None, "failed"):
                return False
        stream, _, message_id = (job["entry"] or "").partition(" ")
        keys = self.keys
        applied = await self._finish(
            keys=[
                keys.active,
                keys.user(job["user_id"]),
                keys.waiting(version),
                keys.job(job_id),
                keys.events(job_id),
                stream or keys.stream(int(version)),
            ],
            args=[job_id, GROUP, message_id, "failed", encode_event(event), self.result_ttl_s, "queued"],
        )
        if applied:
            record_end(job_id, job["kind"] or "unknown", version, event)
        return bool(applied)
