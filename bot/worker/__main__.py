"""`python -m bot.worker`: a GPU worker process for the Redis Streams deployment.

Reads the same settings as the bot (`STYLECODES_*`, `.env`): `STYLECODES_REDIS_URL` (required),
`STYLECODES_DATABASE_URL` or `STYLECODES_DATA_DIR` (the registry it records jobs in; the bot creates and
migrates it), `STYLECODES_SERVED_VERSIONS` / `STYLECODES_MODEL_VERSION`, `STYLECODES_DEVICE`,
`STYLECODES_DTYPE`, `STYLECODES_MAX_BATCH_SIZE`, `STYLECODES_JOB_IDLE_TIMEOUT_S`,
`STYLECODES_MAX_DELIVERIES`, `STYLECODES_METRICS_PORT` (serves /metrics and /healthz).

Start-up, in order: Redis and the database must answer (else a message and exit status 2); the
worker claims its GPU (`STYLECODES_DEVICE=cuda`, or `auto` on a GPU host: the first GPU no other
worker holds, see `bot/worker/gpu_lease.py`; `cuda:N` pins one); it loads every served version and
logs, once per version, whether its images are safety-checked; only then does it join the consumer
groups and take jobs. /healthz answers 503 until then (`"ready": false`, and `"state"` says why).

Test only: `STYLECODES_TEST_STEP_DELAY_S` sleeps that long in every denoising step, so a test can kill
a worker in the middle of a job. Leave it unset in production.

SIGTERM / Ctrl-C: finish the running batch, then exit. A worker holds no job it is not running, so
nothing waits for the idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.config import (
    Settings,
    StartupError,
    check_database,
    data_dir_unusable,
    load_settings,
    redis_unreachable,
    resolve_device,
    resolve_dtype,
)
from bot.metrics import start_metrics_server
from bot.protocol.limits import DispatchLimits
from bot.protocol.periodic import Periodic
from bot.protocol.streams import WORKER_BEAT_S, RedisKeys, beat
from bot.worker.gpu_lease import DEFAULT_TTL_S, Gpu, GpuLease, visible_gpus
from bot.worker.models import EngineLoader, ModelCache, default_engine_loader, preload_models
from bot.worker.redis_worker import RedisWorker, default_consumer_name
from registry.db import create_engine, create_session_factory

log = logging.getLogger("bot.worker")

REDIS_CONNECT_TIMEOUT_S = 10.0  # a black-holed Redis host fails the start instead of hanging it


class WorkerProcess:
    """One `python -m bot.worker`: check the connections, claim a GPU, load the models, then serve jobs.

    `gpus` and `engine_loader` are for tests (fake GPUs, a stand-in engine); by default the GPUs torch
    sees and `StyleEngine.load`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        step_delay_s: float = 0.0,
        keys: RedisKeys | None = None,
        gpus: Callable[[], list[Gpu]] = visible_gpus,
        engine_loader: Callable[[str, str], EngineLoader] = default_engine_loader,
        lease_ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.settings = settings
        self.step_delay_s = step_delay_s
        self.keys = keys or RedisKeys()
        self.consumer = default_consumer_name()
        self.state = "starting"  # -> waiting_for_gpu -> loading -> serving -> stopped
        self.device: str | None = None
        self.dtype: str | None = None
        self.safety_checked: dict[int, bool] = {}
        self.worker: RedisWorker | None = None
        self.lease: GpuLease | None = None
        self._gpus = gpus
        self._engine_loader = engine_loader
        self._lease_ttl_s = lease_ttl_s
        self._stopping = asyncio.Event()
        self._exit_code = 0

    def stop(self) -> None:
        """Stop waiting or loading, or finish the running batch; then `run` returns."""
        self._stopping.set()
        if self.worker is not None:
            self.worker.stop()

    def health(self) -> dict[str, Any]:
        """/healthz: ok only once the models are loaded and jobs are being taken."""
        state: dict[str, Any] = {
            "consumer": self.consumer,
            "state": self.state,
            "device": self.device,
            "dtype": self.dtype,
            "versions": list(self.settings.versions_served),
            "safety_checker": {str(version): checked for version, checked in self.safety_checked.items()},
        }
        if self.worker is not None:
            state.update(self.worker.health())
        state["ready"] = self.state == "serving"
        state["ok"] = state["ready"] and not self._stopping.is_set()
        return state

    async def run(self) -> int:
        """Serve until stopped. Returns the exit status; a `StartupError` says what to fix."""
        settings = self.settings
        assert settings.redis_url, "the worker needs STYLECODES_REDIS_URL"
        try:
            url = settings.resolved_database_url
        except OSError as exc:  # the SQLite folder cannot be created
            raise data_dir_unusable(settings.data_dir, exc) from None
        database = create_engine(url)
        redis = Redis.from_url(
            settings.redis_url, decode_responses=True, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S
        )
        metrics_server = None
        keeper: asyncio.Task[None] | None = None
        try:
            try:
                await redis.ping()
            except (RedisError, OSError) as exc:
                raise redis_unreachable(settings.redis_url, exc) from None
            await check_database(url, database)
            if settings.metrics_port is not None:
                metrics_server = await start_metrics_server(settings.metrics_port, health=self.health)
            device = await self._claim_device(redis)
            if device is None:  # stopped while waiting for a GPU
                return 0
            if self.lease is not None:
                keeper = asyncio.create_task(self.lease.keep(self._lost_gpu), name="stylecodes-gpu-lease")
            self.device, self.dtype = device, resolve_dtype(settings.dtype, device)
            self.state = "loading"
            log.info(
                "event=worker_loading worker=%s device=%s dtype=%s versions=%s",
                self.consumer,
                self.device,
                self.dtype,
                ",".join(map(str, settings.versions_served)),
            )
            models = ModelCache(self._engine_loader(self.device, self.dtype))
            # Live while loading (a first start downloads 7.5 GB): bots keep queueing this worker's jobs
            # instead of refusing them for want of a worker.
            beating = Periodic(
                lambda: beat(redis, self.keys, self.consumer, settings.versions_served),
                WORKER_BEAT_S,
                name="stylecodes-loading-beat",
                run_first=True,
            )
            beating.start()
            try:
                self.safety_checked = await asyncio.to_thread(preload_models, models, settings.versions_served)
            finally:
                await beating.stop()
            if self._stopping.is_set():
                return self._exit_code
            self.worker = RedisWorker(
                redis=redis,
                limits=DispatchLimits.from_settings(settings),
                models=models,
                session_factory=create_session_factory(database),
                keys=self.keys,
                consumer=self.consumer,
                idle_timeout_s=settings.job_idle_timeout_s,
                max_deliveries=settings.max_deliveries,
                step_delay_s=self.step_delay_s,
            )
            self.state = "serving"
            await self.worker.run()
            return self._exit_code
        finally:
            self.state = "stopped"
            if keeper is not None:
                keeper.cancel()
            if self.lease is not None:
                try:
                    await self.lease.release()
                except (RedisError, OSError):
                    pass  # Redis is gone: the lease expires on its own
            if metrics_server is not None:
                await metrics_server.cleanup()
            await redis.aclose()
            await database.dispose()
            log.info("worker %s stopped", self.consumer)

    async def _claim_device(self, redis: Redis) -> str | None:
        """The device to load on: `cuda` claims a free GPU (waiting for one), anything else is used as it is."""
        gpus = self._gpus()
        device = resolve_device(self.settings.device, len(gpus))
        if device != "cuda":
            return device
        self.state = "waiting_for_gpu"
        self.lease = GpuLease(redis, gpus, owner=self.consumer, prefix=self.keys.prefix, ttl_s=self._lease_ttl_s)
        gpu = await self.lease.acquire(self._stopping)
        return None if gpu is None else gpu.device

    def _lost_gpu(self) -> None:
        self._exit_code = 1  # another worker runs on this GPU now: exit, so the container restarts and claims anew
        self.stop()


async def run_worker(settings: Settings, *, step_delay_s: float = 0.0) -> int:
    """The worker of `python -m bot.worker`: SIGTERM and Ctrl-C stop it gracefully."""
    process = WorkerProcess(settings, step_delay_s=step_delay_s)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, process.stop)
    return await process.run()


def main() -> int:
    try:
        settings = load_settings()
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 2
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
    try:
        return asyncio.run(run_worker(settings, step_delay_s=step_delay_s))
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 0


if __name__ == "__main__":
    sys.exit(main())
