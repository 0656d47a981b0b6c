"""The metrics server: /metrics in the Prometheus text format with the job metrics moving, and /healthz."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.dispatch.local import LocalDispatcher
from bot.jobs import JobDone, JobFailed, UserJobLimitError
from bot.metrics import GPU_MEMORY_BYTES, bound_port, start_metrics_server
from bot.protocol.limits import DispatchLimits
from bot.worker.models import ModelCache
from tests.bot.dispatch.helpers import encode_job, imagine_job, record


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(session: aiohttp.ClientSession, port: int) -> dict:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples(await response.text())


async def test_metrics_follow_jobs_and_healthz_reports(demo_engine, session_factory):
    health = {"ok": True, "held_jobs": 0}
    server = await start_metrics_server(0, host="127.0.0.1", health=lambda: health)
    limits = DispatchLimits(served_versions=(0,), max_jobs_per_user=1)
    dispatcher = LocalDispatcher(
        limits=limits, models=ModelCache(lambda v: demo_engine), session_factory=session_factory
    )
    await dispatcher.start()
    port = bound_port(server)
    try:
        async with aiohttp.ClientSession() as http:
            before = await scrape(http, port)
            job = imagine_job(5, count=3)
            await record(session_factory, job)
            handle = await dispatcher.submit(job)
            with pytest.raises(UserJobLimitError):
                await dispatcher.submit(encode_job(5))
            assert isinstance(await handle.result(), JobDone)
            bad = await (await dispatcher.submit(encode_job(5, b"nope"))).result()
            assert isinstance(bad, JobFailed)
            after = await scrape(http, port)

            def delta(name: str, **labels) -> float:
                key = (name, tuple(sorted(labels.items())))
                return after.get(key, 0.0) - before.get(key, 0.0)

            assert delta("stylecodes_jobs_finished_total", kind="imagine", outcome="done") == 1
            assert delta("stylecodes_jobs_finished_total", kind="encode", outcome="failed") == 1
            assert delta("stylecodes_job_failures_total", reason="bad_input") == 1
            assert delta("stylecodes_jobs_rejected_total", reason="user_limit") == 1
            assert delta("stylecodes_batch_samples_sum", kind="generate") == 3
            assert delta("stylecodes_job_wait_seconds_count", kind="imagine", version="0") == 1
            assert delta("stylecodes_job_run_seconds_count", kind="imagine", version="0") == 1
            assert after[("stylecodes_queue_depth", (("version", "0"),))] == 0
            assert after[("stylecodes_model_loaded", (("version", "0"),))] == 1

            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"ok": True, "held_jobs": 0}
            health["ok"] = False
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 503
    finally:
        await dispatcher.close()
        await server.cleanup()


def test_gpu_memory_is_recorded_as_soon_as_a_model_loads(monkeypatch):
    """The weights are what fills the GPU: the gauge must show them before the first batch ends."""
    import torch
    from prometheus_client import REGISTRY

    from bot.worker.models import ModelCache

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 3_000 + index)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 4_000 + index)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda index: 5_000 + index)
    for kind in ("allocated", "reserved", "max_allocated"):
        GPU_MEMORY_BYTES.labels("cuda:0", kind).set(0)

    engine = object()
    assert ModelCache(lambda version: engine).get(0) is engine

    def gauge(kind: str) -> float | None:
        return REGISTRY.get_sample_value("stylecodes_gpu_memory_bytes", {"device": "cuda:0", "kind": kind})

    assert (gauge("allocated"), gauge("reserved"), gauge("max_allocated")) == (3_000, 4_000, 5_000)
