"""What a forged LoRA file says about itself, readable without torch: trigger words, base model, rank, steps.

A forged adapter is one safetensors file in diffusers' `save_lora_weights` layout (`unet.<module>.lora.down.weight`,
`lora_adapter_metadata` in the header, so `pipe.load_lora_weights(path)` works in any diffusers install). Our own
description rides in the same header under `MANIFEST_KEY`, so the file alone is enough to use it; the CLI also writes
it, with the file's sha256, as a JSON sidecar next to the file.

`read_manifest` parses only the header (8 bytes of length, then JSON), so the bot can check an adapter before a
worker loads it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_KEY = "stylecodes_forge"
LORA_CONFIG_KEY = "lora_adapter_metadata"  # diffusers' key (diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY)
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024  # a rank-128 SD1.5 LoRA's header is ~100 KB; more means a broken file
PRIOR_SOURCES = ("auxiliary", "generated")


class AdapterFileError(ValueError):
    """A LoRA file cannot be used; the message says why."""


@dataclass(frozen=True)
class AdapterManifest:
    trigger_words: tuple[str, ...]  # added to every prompt that uses the style, e.g. ("sks style",)
    base_model: str  # what it was trained on (a Hub id, a path, or "demo")
    model_version: int  # the stylecodes model version whose base it was trained on
    rank: int
    alpha: float
    steps: int
    resolution: int
    image_count: int
    prior_source: str  # "auxiliary" (a configured folder of artworks) or "generated" (DreamBooth's prior images)
    learning_rate: float
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. the style's name)

    def to_json(self) -> str:
        data = asdict(self)
        data["trigger_words"] = list(self.trigger_words)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdapterManifest:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            if data.get("format_version") != FORMAT_VERSION:
                raise AdapterFileError(
                    f"The adapter's manifest has format version {data.get('format_version')!r}; this version of "
                    f"stylecodes reads format {FORMAT_VERSION}. Upgrade stylecodes or forge the style again."
                )
            words = data.pop("trigger_words")
            if not isinstance(words, list) or not all(isinstance(word, str) and word for word in words):
                raise TypeError("trigger_words must be a list of non-empty strings")
            manifest = cls(trigger_words=tuple(words), **data)
        except AdapterFileError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise AdapterFileError(f"The adapter's manifest is not valid ({exc}).") from None
        if manifest.prior_source not in PRIOR_SOURCES or manifest.rank < 1 or manifest.steps < 0:
            raise AdapterFileError(f"The adapter's manifest is not valid: {text[:200]}")
        return manifest


def read_header(data: bytes, name: str = "The adapter") -> dict[str, Any]:
    """The JSON header of safetensors `data` (tensor entries plus `__metadata__`), checked for size and shape."""
    if len(data) < 8:
        raise AdapterFileError(f"{name} is not a safetensors file (only {len(data)} bytes).")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise AdapterFileError(f"{name} is not a safetensors file (its header length {length} does not fit).")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdapterFileError(f"{name} is not a safetensors file (unreadable header).") from None
    if not isinstance(header, dict):
        raise AdapterFileError(f"{name} is not a safetensors file (header is not an object).")
    return header


def read_manifest(data: bytes, name: str = "The adapter") -> AdapterManifest | None:
    """The forge manifest in safetensors `data`, or None for a LoRA made elsewhere (still usable, no trigger words).

    Raises `AdapterFileError` when `data` is not an SD LoRA in diffusers' layout.
    """
    header = read_header(data, name)
    metadata = header.get("__metadata__") or {}
    tensors = [key for key in header if key != "__metadata__"]
    if not tensors or not all(key.startswith(("unet.", "text_encoder.")) and ".lora" in key for key in tensors):
        raise AdapterFileError(
            f"{name} is not a Stable Diffusion 1.5 LoRA in diffusers' layout (keys like "
            "`unet.<module>.lora.down.weight`). Forge one with `stylecodes forge`."
        )
    raw = metadata.get(MANIFEST_KEY)
    return None if raw is None else AdapterManifest.from_json(raw)
