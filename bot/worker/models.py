"""Model cache: each served version is loaded on first use and then kept warm for the process's life."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from bot import metrics
from bot.config import Settings, StartupError, error_text, resolve_device, resolve_dtype
from bot.worker.gpu_lease import visible_gpus

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


def preload_models(models: ModelCache, versions: Iterable[int]) -> dict[int, bool]:
    """Load every version now, so no job waits for it, and say once per version whether its images are
    safety-checked. Blocks (downloads, GPU upload): run it in a thread. Returns version -> has a checker.

    Used by the workers and by the embedded bot (`python -m bot`), whose in-process worker serves the same way.
    """
    checked: dict[int, bool] = {}
    for version in versions:
        try:
            engine = models.get(version)
        except Exception as exc:
            raise StartupError(model_load_failed(version, exc)) from exc
        checked[version] = bool(engine.has_safety_checker)
        log.info("event=model_ready version=%d safety_checker=%s", version, checked[version])
        if not checked[version]:
            log.warning(
                "model version %d has no safety checker: generated images are not screened for NSFW content",
                version,
            )
    return checked


def model_load_failed(version: int, exc: BaseException) -> str:
    return (
        f"Could not load model version {version}: {error_text(exc)}. "
        "Version 1 downloads from the Hugging Face Hub (about 7.5 GB, into HF_HOME) unless "
        "STYLECODES_V1_BASE_MODEL, STYLECODES_V1_CHECKPOINT and STYLECODES_V1_IMAGE_ENCODER point at local "
        "copies; offline hosts also set HF_HUB_OFFLINE=1 (docs/operations.md, \"Offline sites\"). "
        "STYLECODES_MODEL_VERSION=0 runs the demo model, which needs no download."
    )
