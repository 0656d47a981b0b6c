"""`python -m bot.worker` as deployed: one worker per GPU through Redis leases, models loaded before the
first job (with /healthz saying so), and startup problems reported as messages, not tracebacks.

The GPUs are stand-ins (the tests run on CPUs): `WorkerProcess` takes the list a worker would see, and an
engine loader that records the device it was asked for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest

from bot.config import Settings, StartupError, resolve_device, resolve_dtype
from bot.protocol.streams import GROUP, RedisKeys
from bot.worker.__main__ import WorkerProcess
from bot.worker.gpu_lease import Gpu, GpuLease
from tests.bot.conftest import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GPUS = [Gpu(0, "GPU-0000aaaa"), Gpu(1, "GPU-1111bbbb")]


# --- Devices ---------------------------------------------------------------------------------------


def test_auto_device_is_the_gpu_when_there_is_one():
    assert resolve_device("auto", gpu_count=0) == "cpu"
    assert resolve_device("auto", gpu_count=2) == "cuda"
    assert resolve_device("cuda:1", gpu_count=2) == "cuda:1"
    assert resolve_dtype("auto", "cuda:1") == "float16" and resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cuda") == "bfloat16"
    assert Settings(_env_file=None).device == "auto" and Settings(_env_file=None).dtype == "auto"


def test_asking_for_a_gpu_that_is_not_there_says_how_to_fix_it():
    with pytest.raises(StartupError, match=r"sees no CUDA GPU.*STYLECODES_DEVICE=auto"):
        resolve_device("cuda", gpu_count=0)
    with pytest.raises(StartupError, match=r"only 2 GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2", gpu_count=2)


def test_a_misspelt_device_is_an_invalid_setting():
    with pytest.raises(ValueError, match="'gpu' is not a device; use auto, cpu, cuda, cuda:N"):
        Settings(_env_file=None, device="gpu")


# --- GPU leases ------------------------------------------------------------------------------------


def lease(redis_client, prefix: str, owner: str, gpus=GPUS, ttl_s: float = 30.0) -> GpuLease:
    return GpuLease(redis_client, gpus, owner=owner, prefix=prefix, ttl_s=ttl_s)


@pytest.mark.redis
async def test_each_worker_claims_a_gpu_of_its_own(redis_client, redis_prefix):
    first, second, third = (lease(redis_client, redis_prefix, f"worker-{i}") for i in range(3))
    assert (await first.try_acquire()).device == "cuda:0"
    assert (await second.try_acquire()).device == "cuda:1"
    assert await third.try_acquire() is None  # more workers than GPUs: the spare gets none
    assert await redis_client.get(f"{redis_prefix}:gpu:GPU-0000aaaa") == "worker-0"

    await first.release()
    assert (await third.try_acquire()).device == "cuda:0"
    # A worker whose lease was taken over never releases the new holder's.
    stale = lease(redis_client, redis_prefix, "worker-0")
    stale.gpu = GPUS[0]
    await stale.release()
    assert await redis_client.get(f"{redis_prefix}:gpu:GPU-0000aaaa") == "worker-2"


@pytest.mark.redis
async def test_a_dead_workers_gpu_is_free_after_the_ttl(redis_client, redis_prefix):
    dead = lease(redis_client, redis_prefix, "dead", gpus=GPUS[:1], ttl_s=0.3)
    alive = lease(redis_client, redis_prefix, "alive", gpus=GPUS[:1], ttl_s=0.3)
    assert await dead.try_acquire() == GPUS[0]
    assert await alive.try_acquire() is None
    await asyncio.sleep(0.5)  # the dead worker renewed nothing
    assert await alive.try_acquire() == GPUS[0]
    assert await dead.renew() is False  # coming back, it finds the GPU taken


@pytest.mark.redis
async def test_renewal_keeps_the_gpu_and_a_takeover_stops_the_worker(redis_client, redis_prefix):
    holder = lease(redis_client, redis_prefix, "holder", gpus=GPUS[:1], ttl_s=0.3)
    other = lease(redis_client, redis_prefix, "other", gpus=GPUS[:1], ttl_s=0.3)
    await holder.try_acquire()
    lost = asyncio.Event()
    keeper = asyncio.create_task(holder.keep(lost.set))
    try:
        await asyncio.sleep(1.0)  # more than three TTLs
        assert await other.try_acquire() is None
        # Expired while Redis was away, and nobody took it: renewing takes it back.
        await redis_client.delete(holder.key(GPUS[0]))
        assert await holder.renew() is True
        assert await redis_client.get(holder.key(GPUS[0])) == "holder"
        # Taken by another worker: the holder is told, once.
        await redis_client.set(holder.key(GPUS[0]), "intruder")
        await asyncio.wait_for(lost.wait(), 2)
        await asyncio.wait_for(keeper, 1)
    finally:
        keeper.cancel()


@pytest.mark.redis
async def test_waiting_for_a_gpu_ends_when_the_worker_stops(redis_client, redis_prefix):
    await lease(redis_client, redis_prefix, "busy", gpus=GPUS[:1]).try_acquire()
    waiting = lease(redis_client, redis_prefix, "waiting", gpus=GPUS[:1], ttl_s=0.3)
    stopping = asyncio.Event()
    task = asyncio.create_task(waiting.acquire(stopping))
    await asyncio.sleep(0.3)
    assert not task.done()
    stopping.set()
    assert await asyncio.wait_for(task, 1) is None


# --- The worker process ----------------------------------------------------------------------------


class RecordingLoader:
    """`engine_loader(device, dtype)` that records the device and can hold the load until released."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.asked: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, device: str, dtype: str):
        self.asked.append((device, dtype))

        def load(version: int):
            assert self.release.wait(30), "the test never released the model load"
            return self.engine

        return load


def worker_settings(redis_server, registry_url: str, **values) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_server.url,
        database_url=registry_url,
        model_version=0,
        served_versions=[0],
        **values,
    )


async def wait_until(predicate, within_s: float, what: str) -> None:
    for _ in range(int(within_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


@pytest.mark.redis
async def test_replicas_run_one_per_gpu_and_a_spare_waits_for_one(
    redis_server, registry_url, redis_prefix, demo_engine
):
    settings = worker_settings(redis_server, registry_url, device="cuda")  # what the compose file sets
    loader = RecordingLoader(demo_engine)
    workers = [
        WorkerProcess(
            settings, keys=RedisKeys(redis_prefix), gpus=lambda: GPUS, engine_loader=loader, lease_ttl_s=0.6
        )
        for _ in range(3)
    ]
    tasks = []
    try:
        for worker in workers:  # one after the other, as replicas come up
            tasks.append(asyncio.create_task(worker.run()))
            await wait_until(lambda w=worker: w.state in ("serving", "waiting_for_gpu"), 30, "the worker to settle")
        serving = [w for w in workers if w.state == "serving"]
        assert {w.device for w in serving} == {"cuda:0", "cuda:1"}
        assert all(w.dtype == "float16" for w in serving)  # dtype auto on CUDA
        spare = workers[2]
        assert spare.state == "waiting_for_gpu" and spare.device is None
        health = spare.health()
        assert health["ok"] is False and health["ready"] is False and health["state"] == "waiting_for_gpu"

        # A replica goes away: the spare takes its GPU.
        freed = serving[0].device
        serving[0].stop()
        assert await asyncio.wait_for(tasks[workers.index(serving[0])], 10) == 0
        await wait_until(lambda: spare.state == "serving", 10, "the spare to claim the freed GPU")
        assert spare.device == freed
        assert sorted(device for device, _ in loader.asked) == sorted(["cuda:0", "cuda:1", freed])
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)


@pytest.mark.redis
async def test_worker_loads_its_models_before_taking_jobs_and_healthz_says_so(
    redis_server, redis_client, registry_url, redis_prefix, demo_engine, caplog
):
    caplog.set_level(logging.INFO)
    port = free_port()
    keys = RedisKeys(redis_prefix)
    loader = RecordingLoader(demo_engine)
    loader.release.clear()  # hold the model load, to look at the worker meanwhile
    worker = WorkerProcess(
        worker_settings(redis_server, registry_url, device="auto", metrics_port=port), keys=keys, engine_loader=loader
    )
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: worker.state == "loading", 30, "the worker to load its models")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 503
                body = await response.json()
            assert body["ready"] is False and body["state"] == "loading" and body["device"] == "cpu"
            # Not in the consumer group yet: no job goes to a worker that cannot run it.
            assert not await redis_client.exists(keys.stream(0))

            loader.release.set()
            await wait_until(lambda: worker.state == "serving", 30, "the worker to serve")
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                body = await response.json()
        assert body["ok"] is True and body["ready"] is True
        assert body["models_loaded"] == [0] and body["safety_checker"] == {"0": False}
        assert (body["device"], body["dtype"]) == ("cpu", "float32")
        for _ in range(100):  # it joins the consumer group of every served version as it starts serving
            if await redis_client.exists(keys.stream(0)) and await redis_client.xinfo_groups(keys.stream(0)):
                break
            await asyncio.sleep(0.05)
        consumers = await redis_client.xinfo_consumers(keys.stream(0), GROUP)
        assert [c["name"] for c in consumers] == [worker.consumer]
        # The demo model has no safety checker: said once, at startup, before any job.
        messages = [record.getMessage() for record in caplog.records]
        assert sum("has no safety checker" in message for message in messages) == 1
        assert any("event=model_ready version=0 safety_checker=False" in message for message in messages)
    finally:
        loader.release.set()
        worker.stop()
        assert await asyncio.wait_for(task, 15) == 0


# --- Startup problems ------------------------------------------------------------------------------


def run_worker(cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECODES_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), HF_HUB_OFFLINE="1", STYLECODES_MODEL_VERSION="0", **variables)
    return subprocess.run(
        [sys.executable, "-m", "bot.worker"], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_worker_with_invalid_settings_says_which(tmp_path):
    result = run_worker(tmp_path, STYLECODES_REDIS_URL="redis://127.0.0.1:1/0", STYLECODES_MAX_BATCH_SIZE="0")
    assert result.returncode == 2
    assert "Invalid settings" in result.stderr and "max_batch_size (STYLECODES_MAX_BATCH_SIZE)" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_with_unreachable_redis_says_where_it_tried(tmp_path):
    result = run_worker(tmp_path, STYLECODES_REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    assert result.returncode == 2
    assert "Could not connect to Redis at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "STYLECODES_REDIS_URL" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.redis
def test_worker_with_unreachable_database_says_where_it_tried(tmp_path, redis_server):
    url = "postgresql+asyncpg://stylecodes:hunter2@127.0.0.1:1/stylecodes"
    result = run_worker(tmp_path, STYLECODES_REDIS_URL=redis_server.url, STYLECODES_DATABASE_URL=url)
    assert result.returncode == 2
    assert "Could not open the registry database at postgresql+asyncpg://stylecodes:***@127.0.0.1:1" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.redis
def test_worker_asked_for_a_missing_gpu_says_so(tmp_path, redis_server, registry_url):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    result = run_worker(
        tmp_path,
        STYLECODES_REDIS_URL=redis_server.url,
        STYLECODES_DATABASE_URL=registry_url,
        STYLECODES_DEVICE="cuda",
    )
    assert result.returncode == 2
    assert "STYLECODES_DEVICE=cuda asks for a GPU, but this process sees no CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr
