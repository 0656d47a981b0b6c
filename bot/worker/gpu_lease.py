"""One worker per GPU when every worker sees every GPU: each claims a GPU through a lease in Redis.

Docker has no GPU pool: `deploy.replicas: N` with a reservation of `count: 1` gives every replica the
same GPU 0. So the compose file gives each worker replica all of the host's GPUs (`count: all`) and
`STYLECODES_DEVICE=cuda`, and each worker claims the first GPU no other worker holds:

    SET {prefix}:gpu:{uuid} {worker} NX PX {ttl}

keyed by the GPU's UUID, which is unique across hosts, so workers on several machines sharing one Redis
never collide. The holder renews the lease every third of its TTL; a worker that dies stops renewing,
and after the TTL (30 s) its GPU is free for the next one. A worker started when every GPU is claimed
waits for one (and says so in the log and in /healthz). `STYLECODES_DEVICE=cuda:N` pins a GPU without
a lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 30.0

# KEYS: lease; ARGV: owner, ttl_ms -> 1 held (renewed, or taken again after it expired), 0 another worker holds it
RENEW_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease; ARGV: owner -> 1 released, 0 not ours (never delete another worker's lease)
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Gpu:
    index: int  # torch's index in this process: the device is cuda:{index}
    uuid: str  # the same GPU seen from any container or host

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


def visible_gpus() -> list[Gpu]:
    """The CUDA GPUs this process sees (none without torch's CUDA build or without GPUs)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        gpus.append(Gpu(index, str(uuid) if uuid is not None else f"index-{index}"))
    return gpus


class GpuLease:
    """Claims one of `gpus` for `owner` and keeps it claimed; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        gpus: list[Gpu],
        *,
        owner: str,
        prefix: str = "stylecodes",
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.redis = redis
        self.gpus = list(gpus)
        self.owner = owner
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.gpu: Gpu | None = None  # the GPU held, once acquired
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    def key(self, gpu: Gpu) -> str:
        return f"{self.prefix}:gpu:{gpu.uuid}"

    @property
    def _ttl_ms(self) -> int:
        return max(int(self.ttl_s * 1000), 1)

    async def try_acquire(self) -> Gpu | None:
        """The first GPU no other worker holds, now claimed; None when all are claimed."""
        for gpu in self.gpus:
            if await self.redis.set(self.key(gpu), self.owner, nx=True, px=self._ttl_ms):
                self.gpu = gpu
                log.info("event=gpu_claimed device=%s uuid=%s worker=%s", gpu.device, gpu.uuid, self.owner)
                return gpu
        return None

    async def acquire(self, stopping: asyncio.Event | None = None) -> Gpu | None:
        """Claim a GPU, waiting while every one is held by another worker; None if `stopping` is set first."""
        warned = False
        while True:
            gpu = await self.try_acquire()
            if gpu is not None:
                return gpu
            if not warned:
                warned = True
                held = ", ".join([f"{gpu.device} by {await self._holder(gpu)}" for gpu in self.gpus])
                log.warning(
                    "every GPU this worker sees is claimed by another worker (%s); waiting for one to free up. "
                    "Run at most one worker per GPU (deploy.replicas), or pin one with STYLECODES_DEVICE=cuda:N.",
                    held,
                )
            if stopping is None:
                await asyncio.sleep(self.ttl_s / 3)
                continue
            try:
                await asyncio.wait_for(stopping.wait(), self.ttl_s / 3)
                return None
            except TimeoutError:
                pass

    async def _holder(self, gpu: Gpu) -> str:
        return await self.redis.get(self.key(gpu)) or "nobody"

    async def renew(self) -> bool:
        """Extend the lease; False when another worker holds the GPU now (ours expired and was taken)."""
        assert self.gpu is not None, "acquire a GPU first"
        return bool(await self._renew(keys=[self.key(self.gpu)], args=[self.owner, self._ttl_ms]))

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew every third of the TTL until cancelled; call `on_lost` (once) if another worker took the GPU.

        Redis unreachable for a while is not a loss: the lease is taken again as soon as Redis answers,
        unless another worker claimed the GPU in the meantime.
        """
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                held = await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("could not renew the lease on %s (%s); retrying", self.gpu.device, exc)
                continue
            if not held:
                holder = await self._holder(self.gpu)
                log.error(
                    "event=gpu_lost device=%s uuid=%s worker=%s: the lease expired and %s claimed this GPU; stopping",
                    self.gpu.device,
                    self.gpu.uuid,
                    self.owner,
                    holder,
                )
                on_lost()
                return

    async def release(self) -> None:
        """Give the GPU back at once (else it is free after the TTL). Never releases another worker's lease."""
        if self.gpu is None:
            return
        await self._release(keys=[self.key(self.gpu)], args=[self.owner])
        log.info("event=gpu_released device=%s worker=%s", self.gpu.device, self.owner)
        self.gpu = None
