"""Prometheus metrics shared by the bot and the worker, and the small HTTP server that exposes them.

Every process (the bot, each `python -m bot.worker`) serves its own `/metrics` and `/healthz`; a
Prometheus scrape config lists them all. Metric names start with `stylecodes_`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# Seconds; SD1.5 jobs take seconds to minutes, demo jobs milliseconds.
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

QUEUE_DEPTH = Gauge("stylecodes_queue_depth", "Jobs waiting to start, per model version", ["version"])
JOBS_RUNNING = Gauge("stylecodes_jobs_running", "Jobs in the engine right now, in this process", ["version"])
JOBS_SUBMITTED = Counter("stylecodes_jobs_submitted_total", "Jobs accepted by submit", ["kind", "version"])
JOBS_REJECTED = Counter(
    "stylecodes_jobs_rejected_total", "Jobs refused at submit", ["reason"]
)  # queue_full, user_limit, unserved_version, no_worker
JOBS_FINISHED = Counter("stylecodes_jobs_finished_total", "Jobs that ended", ["kind", "outcome"])  # done / failed
JOB_FAILURES = Counter("stylecodes_job_failures_total", "Failed jobs by cause (JobFailed.code)", ["reason"])
JOB_WAIT_SECONDS = Histogram(
    "stylecodes_job_wait_seconds", "Queued -> started", ["kind", "version"], buckets=_LATENCY_BUCKETS
)
JOB_RUN_SECONDS = Histogram(
    "stylecodes_job_run_seconds", "Started -> done or failed", ["kind", "version"], buckets=_LATENCY_BUCKETS
)
# What the user waits: submitted -> outcome handed to the bot that follows the job, once per job.
JOB_LATENCY_SECONDS = Histogram(
    "stylecodes_job_latency_seconds",
    "Submitted -> done or failed, as seen by the bot following the job",
    ["kind", "version", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SAMPLES = Histogram(
    "stylecodes_batch_samples", "Samples per engine call", ["kind"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
BATCH_JOBS = Histogram("stylecodes_batch_jobs", "Jobs per engine call", ["kind"], buckets=(1, 2, 3, 4, 6, 8, 16))
MODELS_LOADED = Gauge("stylecodes_model_loaded", "1 when this process holds the version warm", ["version"])
MODEL_LOAD_SECONDS = Histogram("stylecodes_model_load_seconds", "Time to load a model version", ["version"])
GPU_MEMORY_BYTES = Gauge("stylecodes_gpu_memory_bytes", "CUDA memory of this process", ["device", "kind"])
JOBS_RECLAIMED = Counter("stylecodes_jobs_reclaimed_total", "Redis jobs taken over from a silent worker", ["version"])


def record_gpu_memory() -> None:
    """Refresh the GPU memory gauges (no-op without CUDA). Called after each batch."""
    try:
        import torch
    except ImportError:  # the Redis-mode bot process may run without torch
        return
    if not torch.cuda.is_available():
        return
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        GPU_MEMORY_BYTES.labels(device, "allocated").set(torch.cuda.memory_allocated(index))
        GPU_MEMORY_BYTES.labels(device, "reserved").set(torch.cuda.memory_reserved(index))
        GPU_MEMORY_BYTES.labels(device, "max_allocated").set(torch.cuda.max_memory_allocated(index))


HealthCheck = Callable[[], dict]


def metrics_app(health: HealthCheck | None = None) -> web.Application:
    """`/metrics` in the Prometheus text format; `/healthz` is 200 with a JSON body, 503 when `health()` says not ok.

    `health()` returns a dict; its `"ok"` key (default True) decides the status code.
    """

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        try:
            state = dict(health()) if health is not None else {}
        except Exception as exc:  # a health probe must answer, not crash
            state = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        state.setdefault("ok", True)
        return web.json_response(state, status=200 if state["ok"] else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_metrics_server(port: int, *, host: str = "0.0.0.0", health: HealthCheck | None = None) -> web.AppRunner:
    """Serve `/metrics` and `/healthz` on `host:port` (port 0 = any free port). Stop with `await runner.cleanup()`."""
    runner = web.AppRunner(metrics_app(health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics server listening on %s:%s", host, bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a started metrics server listens on (useful with port 0)."""
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the metrics server is not listening")
