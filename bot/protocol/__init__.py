"""What the two sides of the job queue agree on: the bot side (`bot.dispatch`) submits jobs and follows
them, the worker side (`bot.worker`) runs them, and both import this package, never each other.

- `limits`: the deployment's limits (`DispatchLimits`).
- `streams`: the Redis Streams protocol (keys, Lua scripts, events on the wire, live workers).
- `usage`: a job's record (its usage row in the registry, its end in the metrics and the log).
- `periodic`: background upkeep on an interval (heartbeats, sweeps).
"""
