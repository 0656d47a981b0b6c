"""LoRA adapters at inference: loaded into a UNet once, the recently used ones kept, a set activated per batch.

    cache = LoraAdapterCache(pipeline.unet, capacity=8)
    with cache.active([(adapter, 0.8)]):           # adapter set and LoRA scales for this batch
        engine.generate([... prompt=with_trigger_words(prompt, [adapter]) ...])

Loading goes through diffusers (`UNet2DConditionModel.load_lora_adapter`, peft adapters), the same code as
`pipe.load_lora_weights`. A loaded adapter stays injected in the UNet until evicted (least recently used beyond
`capacity`), so switching between cached adapters is a `set_adapters` call: no weights move. With no adapter
active the LoRA layers are disabled and the UNet computes exactly its base output.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from stylecodes.lora.adapter import LoraAdapter
from stylecodes.lora.manifest import AdapterFileError

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 8  # a rank-8 SD1.5 adapter is ~3 MB in fp16: eight cost nothing next to the 1.7 GB UNet
SCALE_RANGE = (0.0, 2.0)


class LoraAdapterCache:
    """The adapters loaded into one UNet. Not thread-safe (the worker runs one batch at a time)."""

    def __init__(self, unet: Any, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"`capacity` must be at least 1, got {capacity}.")
        self.unet = unet
        self.capacity = capacity
        self._loaded: OrderedDict[str, LoraAdapter] = OrderedDict()  # adapter name -> adapter, oldest first

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def activate(self, adapters: Sequence[tuple[LoraAdapter, float]]) -> None:
        """Make exactly `adapters` (with their LoRA scales) active; an empty set restores the base UNet."""
        if not adapters:
            self.deactivate()
            return
        for _, scale in adapters:
            if not SCALE_RANGE[0] <= float(scale) <= SCALE_RANGE[1]:
                raise ValueError(f"A LoRA scale must be in {SCALE_RANGE[0]}..{SCALE_RANGE[1]}, got {scale}.")
        keep = {adapter_name(adapter) for adapter, _ in adapters}
        names = [self._ensure_loaded(adapter, keep) for adapter, _ in adapters]
        self.unet.enable_lora()
        self.unet.set_adapters(names, weights=[float(scale) for _, scale in adapters])

    def deactivate(self) -> None:
        if self._loaded:
            self.unet.disable_lora()

    @contextlib.contextmanager
    def active(self, adapters: Sequence[tuple[LoraAdapter, float]]) -> Iterator[None]:
        self.activate(adapters)
        try:
            yield
        finally:
            self.deactivate()

    def evict(self, name: str) -> None:
        if self._loaded.pop(name, None) is not None:
            self.unet.delete_adapters(name)

    def _ensure_loaded(self, adapter: LoraAdapter, keep: set[str]) -> str:
        name = adapter_name(adapter)
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return name
        for old in [old for old in self._loaded if old not in keep][: max(0, len(self._loaded) + 1 - self.capacity)]:
            self.evict(old)
        state_dict = adapter.unet_state_dict
        if not state_dict:
            raise AdapterFileError("The adapter has no UNet weights; only UNet LoRAs can be used here.")
        try:
            with warnings.catch_warnings():
                # peft warns on every adapter after the first; several adapters in one UNet is this cache's purpose
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.unet.load_lora_adapter(
                    dict(state_dict),
                    prefix="unet",
                    adapter_name=name,
                    metadata=adapter.lora_config or None,
                    low_cpu_mem_usage=True,
                )
        except (ValueError, RuntimeError, KeyError) as exc:
            # e.g. shapes of another base (an SDXL LoRA on SD1.5): nothing may stay half-loaded
            if name in getattr(self.unet, "peft_config", {}):
                self.unet.delete_adapters(name)
            raise AdapterFileError(f"The adapter does not fit this model's UNet ({_first_line(exc)}).") from None
        self._loaded[name] = adapter
        return name


def adapter_name(adapter: LoraAdapter) -> str:
    return f"lora_{adapter.sha256[:16]}"


def with_trigger_words(prompt: str, adapters: Sequence[LoraAdapter]) -> str:
    """`prompt` with every adapter's trigger words appended (once; words already in the prompt are not repeated)."""
    words = [word for adapter in adapters for word in adapter.trigger_words if word.lower() not in prompt.lower()]
    words = list(dict.fromkeys(words))
    if not words:
        return prompt
    return ", ".join([prompt.rstrip(" ,"), *words]) if prompt.strip() else ", ".join(words)


def lora_layer_dtype(unet: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the first LoRA weight in `unet` (None without one): checks that adapters follow the UNet."""
    for key, value in unet.state_dict().items():
        if ".lora_A." in key:
            return value.dtype
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
