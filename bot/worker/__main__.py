"""`python -m bot.worker`: a GPU worker process for the Redis Streams deployment.

Reads the same settings as the bot (`STYLECODES_*`, `.env`): `STYLECODES_REDIS_URL` (required),
`STYLECODES_DATABASE_URL` or `STYLECODES_DATA_DIR` (the registry it records jobs in; the bot creates and
migrates it), `STYLECODES_SERVED_VERSIONS` / `STYLECODES_MODEL_VERSION`, `STYLECODES_DEVICE`,
`STYLECODES_DTYPE`, `STYLECODES_MAX_BATCH_SIZE`, `STYLECODES_JOB_IDLE_TIMEOUT_S`,
`STYLECODES_MAX_DELIVERIES`, `STYLECODES_METRICS_PORT` (serves /metrics and /healthz).

Test only: `STYLECODES_TEST_STEP_DELAY_S` sleeps that long in every denoising step, so a test can kill
a worker in the middle of a job. Leave it unset in production.

SIGTERM / Ctrl-C: finish the running batch, then exit; jobs held but not started are reclaimed by the
other workers after the idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from redis.asyncio import Redis

from bot.config import Settings
from bot.dispatch.base import DispatchLimits
from bot.metrics import start_metrics_server
from bot.worker.models import ModelCache, default_engine_loader
from bot.worker.redis_worker import RedisWorker

log = logging.getLogger("bot.worker")


async def run_worker(settings: Settings, *, step_delay_s: float = 0.0) -> None:
    import stylecodes.engine  # noqa: F401  (torch + diffusers: import before taking jobs, not in the first one)
    from registry.db import create_engine, create_session_factory

    database = create_engine(settings.resolved_database_url)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    worker = RedisWorker(
        redis=redis,
        limits=DispatchLimits.from_settings(settings),
        models=ModelCache(default_engine_loader(settings.device, settings.dtype)),
        session_factory=create_session_factory(database),
        idle_timeout_s=settings.job_idle_timeout_s,
        max_deliveries=settings.max_deliveries,
        step_delay_s=step_delay_s,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server = await start_metrics_server(settings.metrics_port, health=worker.health)
    try:
        await worker.run()
    finally:
        if metrics_server is not None:
            await metrics_server.cleanup()
        await redis.aclose()
        await database.dispose()
        log.info("worker %s stopped", worker.consumer)


def main() -> int:
    settings = Settings()
    if not settings.redis_url:
        print(
            "python -m bot.worker is the worker of the Redis deployment: set STYLECODES_REDIS_URL "
            "(e.g. redis://localhost:6379/0). Without Redis, `python -m bot` runs its own worker thread.",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    step_delay_s = float(os.environ.get("STYLECODES_TEST_STEP_DELAY_S", "0") or 0)
    asyncio.run(run_worker(settings, step_delay_s=step_delay_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
