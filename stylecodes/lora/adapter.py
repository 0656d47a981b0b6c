"""A LoRA adapter in memory: its tensors in diffusers' file layout, its LoRA config and its forge manifest.

    adapter = LoraAdapter.from_unet(unet, "forge", lora_config, manifest)   # after training
    data = adapter.to_bytes()                                                 # a few MB of safetensors
    adapter = LoraAdapter.from_bytes(data)                                    # in a worker, from the artifact store

The layout is what diffusers' `StableDiffusionLoraLoaderMixin.save_lora_weights` writes (it builds the state dict
here), so the file also loads with `StableDiffusionPipeline.load_lora_weights`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from stylecodes.files import write_atomically
from stylecodes.lora.manifest import (
    LORA_CONFIG_KEY,
    MANIFEST_KEY,
    AdapterFileError,
    AdapterManifest,
    read_header,
    read_manifest,
)

MAX_ADAPTER_BYTES = 512 * 1024 * 1024  # rank 128 on every SD1.5 projection is ~200 MB; a forged one is a few MB
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # every attention projection of the UNet (self and cross)


@dataclass(frozen=True)
class LoraAdapter:
    state_dict: dict[str, torch.Tensor]  # "unet.<module>.lora.down.weight" -> (rank, in), ".lora.up." -> (out, rank)
    lora_config: dict[str, Any]  # LoraConfig kwargs, keys prefixed "unet." (diffusers' lora_adapter_metadata)
    manifest: AdapterManifest | None  # None: a LoRA made elsewhere (no trigger words)
    sha256: str  # of `to_bytes()`: names the adapter in caches and in the artifact store

    @classmethod
    def from_unet(
        cls, unet: Any, adapter_name: str, manifest: AdapterManifest, dtype: torch.dtype = torch.float16
    ) -> LoraAdapter:
        """Snapshot the peft adapter `adapter_name` of `unet`, stored in `dtype` (fp16 halves the file)."""
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        peft_state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
        layers = {key: value.detach().to("cpu", dtype).contiguous() for key, value in peft_state.items()}
        config = unet.peft_config[adapter_name]
        lora_config = {
            "r": config.r,
            "lora_alpha": config.lora_alpha,
            "target_modules": sorted(config.target_modules),
            "lora_dropout": 0.0,
        }
        captured: dict[str, torch.Tensor] = {}
        with tempfile.TemporaryDirectory(prefix="stylecodes-lora-") as folder:
            # diffusers packs the keys ("unet." + its own names); the save function keeps them instead of writing.
            StableDiffusionPipeline.save_lora_weights(
                folder,
                unet_lora_layers=convert_state_dict_to_diffusers(layers),
                save_function=lambda weights, _filename: captured.update(weights),
            )
        return cls.build(captured, {f"unet.{key}": value for key, value in lora_config.items()}, manifest)

    @classmethod
    def build(
        cls, state_dict: dict[str, torch.Tensor], lora_config: dict[str, Any], manifest: AdapterManifest | None
    ) -> LoraAdapter:
        data = _serialize(state_dict, lora_config, manifest)
        return cls(state_dict, lora_config, manifest, hashlib.sha256(data).hexdigest())

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "The adapter") -> LoraAdapter:
        if len(data) > MAX_ADAPTER_BYTES:
            raise AdapterFileError(
                f"{name} is {len(data) / 2**20:.0f} MiB; a LoRA adapter is at most a few hundred MB."
            )
        manifest = read_manifest(data, name)  # checks the layout from the header before any tensor is read
        try:
            state_dict = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise AdapterFileError(f"{name} is damaged ({exc}).") from None
        metadata = read_header(data, name).get("__metadata__") or {}
        try:
            lora_config = json.loads(metadata[LORA_CONFIG_KEY]) if LORA_CONFIG_KEY in metadata else {}
        except json.JSONDecodeError:
            raise AdapterFileError(f"{name} has an unreadable `{LORA_CONFIG_KEY}`.") from None
        return cls(state_dict, lora_config, manifest, hashlib.sha256(data).hexdigest())

    @classmethod
    def read(cls, path: str | Path) -> LoraAdapter:
        path = Path(path)
        if not path.is_file():
            raise AdapterFileError(f"`{path}` does not exist or is not a file.")
        if path.stat().st_size > MAX_ADAPTER_BYTES:
            raise AdapterFileError(f"`{path}` is too large to be a LoRA adapter.")
        return cls.from_bytes(path.read_bytes(), f"`{path}`")

    def to_bytes(self) -> bytes:
        return _serialize(self.state_dict, self.lora_config, self.manifest)

    @property
    def trigger_words(self) -> tuple[str, ...]:
        return () if self.manifest is None else self.manifest.trigger_words

    @property
    def unet_state_dict(self) -> dict[str, torch.Tensor]:
        return {key: value for key, value in self.state_dict.items() if key.startswith("unet.")}

    @property
    def size_bytes(self) -> int:
        return sum(value.numel() * value.element_size() for value in self.state_dict.values())

    def save(self, path: str | Path) -> Path:
        """Write the adapter to `path` and its manifest with the file's sha256 to `path` + `.json`, atomically."""
        path = Path(path)
        data = self.to_bytes()
        sidecar = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if self.manifest is not None:
            sidecar["manifest"] = json.loads(self.manifest.to_json())
        write_atomically(path, data)
        manifest_path = manifest_path_for(path)
        write_atomically(manifest_path, (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        return manifest_path


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _serialize(
    state_dict: dict[str, torch.Tensor], lora_config: dict[str, Any], manifest: AdapterManifest | None
) -> bytes:
    metadata = {"format": "pt", LORA_CONFIG_KEY: json.dumps(lora_config, indent=2, sort_keys=True)}
    if manifest is not None:
        metadata[MANIFEST_KEY] = manifest.to_json()
    return canonical_safetensors(state_dict, metadata)


_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file of `tensors`, byte for byte the same for the same content.

    safetensors' own writer orders the metadata as a hash map does (differently in each process), so the same
    adapter would get another sha256 each time; here the header is JSON with sorted keys and tensors in name order.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"LoRA tensor {name} has dtype {tensor.dtype}; store float16, bfloat16 or float32.")
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the tensor data to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)
