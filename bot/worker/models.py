"""Model cache: each served version is loaded on first use and then kept warm for the process's life."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import metrics

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

EngineLoader = Callable[[int], Any]  # version -> a loaded StyleEngine (or anything with its methods)


def default_engine_loader(device: str, dtype: str) -> EngineLoader:
    """`StyleEngine.load` on `device` with `dtype` given by name ("float16"); imports torch only when called."""

    def load(version: int) -> Any:
        import torch

        from stylecodes.engine import StyleEngine

        return StyleEngine.load(version, device=device, dtype=getattr(torch, dtype))

    return load


def configured_engine_loader(settings: Settings) -> EngineLoader:
    """`default_engine_loader` on the settings' device and dtype (`auto`: the GPU when torch sees one)."""
    from bot.config import resolve_device, resolve_dtype
    from bot.worker.gpu_lease import visible_gpus

    device = resolve_device(settings.device, len(visible_gpus()))
    dtype = resolve_dtype(settings.dtype, device)
    log.info("event=engine_device device=%s dtype=%s", device, dtype)
    return default_engine_loader(device, dtype)


class ModelCache:
    """Loads engines lazily and keeps them. `get` blocks while loading: call it from the engine thread."""

    def __init__(self, loader: EngineLoader) -> None:
        self._loader = loader
        self._engines: dict[int, Any] = {}
        self._lock = threading.Lock()  # two threads asking for one version load it once

    def get(self, version: int) -> Any:
        engine = self._engines.get(version)
        if engine is not None:
            return engine
        with self._lock:
            if version not in self._engines:
                started = time.perf_counter()
                self._engines[version] = self._loader(version)
                seconds = time.perf_counter() - started
                metrics.MODEL_LOAD_SECONDS.labels(str(version)).observe(seconds)
                metrics.MODELS_LOADED.labels(str(version)).set(1)
                metrics.record_gpu_memory()  # the weights are what fills the GPU: show it before the first batch
                log.info("event=model_loaded version=%d seconds=%.2f", version, seconds)
            return self._engines[version]

    @property
    def loaded_versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._engines))
