"""The Redis Streams protocol that bot processes and worker processes share: keys, Lua scripts, events on
the wire, and which workers are live. `bot.dispatch.redis_streams` (the bot side) and
`bot.worker.redis_worker` (the worker side) both speak it, and neither imports the other.

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

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from bot.jobs import JobEvent, event_to_dict

GROUP = "workers"
DEFAULT_JOB_TTL_S = 7 * 24 * 3600  # an unfinished job's records; far beyond any queue wait
DEFAULT_RESULT_TTL_S = 24 * 3600  # a finished job's events, for bots that restart and come back for them
WORKER_ALIVE_S = 30.0  # a worker that beat within this long is live (it beats every few seconds)
WORKER_BEAT_S = 5.0
FOLLOWER_TTL_S = 30.0  # a follower that stopped renewing for this long is gone: another bot may adopt the job
DELIVERED = "delivered"  # the follower key's value once a bot got the job's outcome


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


# Give a job back: a copy at the end of the version's `returned` stream, the original acked and deleted, in
# one step, and only while this consumer still holds it (so it is never duplicated).
# KEYS: from_stream, returned_stream, job. ARGV: group, message_id, consumer, job_json, job_id, submitted_at,
# deliveries (attempts so far, not counting this delivery). -> the new entry id, or nil
RETURN_SCRIPT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return false end
local id = redis.call('XADD', KEYS[2], '*', 'job', ARGV[4], 'job_id', ARGV[5], 'submitted_at', ARGV[6],
                      'deliveries', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'entry', KEYS[2] .. ' ' .. id) end
return id
"""


def finish_keys(keys: RedisKeys, job_id: str, user_id: int | str, version: int | str, stream: str) -> list[str]:
    """The KEYS of `FINISH_SCRIPT` for a job whose entry is in `stream`."""
    return [keys.active, keys.user(user_id), keys.waiting(version), keys.job(job_id), keys.events(job_id), stream]


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

