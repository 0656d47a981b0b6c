"""`ForgeCheckpoint`: everything a forge run needs to continue on another machine, as one safetensors blob.

A worker killed mid-training loses at most `checkpoint_every` steps: the next worker reads the last checkpoint
(from the artifact store) and continues exactly where it stopped. Continuing is exact, not approximate: the LoRA
weights, AdamW's moments, the random generator that draws images, flips, noise and timesteps, and generated prior
images all come back, so a resumed run ends with the same weights as one that was never interrupted (on the same
hardware). `fingerprint` ties a checkpoint to its images, settings and base model; resuming anything else fails.

Stored as safetensors (tensors plus a JSON header): no pickle, so a checkpoint read from shared storage cannot run
code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from stylecodes.lora.manifest import read_header

FORMAT = "stylecodes-forge-checkpoint/1"


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not belong to this run (other images, settings or base model), or is damaged."""


@dataclass
class ForgeCheckpoint:
    step: int  # steps completed
    fingerprint: str
    lora: dict[str, torch.Tensor]  # trainable parameter name -> fp32 value
    optimizer: dict[int, dict[str, torch.Tensor]]  # AdamW state per parameter index
    rng_state: torch.Tensor  # the CPU generator's state (uint8)
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0  # time spent in training steps so far (for the ETA after a resume)
    prior_images: np.ndarray | None = None  # (N, H, W, 3) uint8: generated prior images, so a resume reuses them

    def to_bytes(self) -> bytes:
        tensors = {
            f"lora.{name}": value.detach().to("cpu", torch.float32).contiguous() for name, value in self.lora.items()
        }
        for index, state in self.optimizer.items():
            for name, value in state.items():
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
        tensors["rng_state"] = self.rng_state.cpu().contiguous()
        if self.prior_images is not None:
            tensors["prior_images"] = torch.from_numpy(np.ascontiguousarray(self.prior_images))
        metadata = {
            "format": FORMAT,
            "step": str(self.step),
            "fingerprint": self.fingerprint,
            "losses": json.dumps(self.losses),
            "train_seconds": repr(self.train_seconds),
        }
        return save_safetensors(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> ForgeCheckpoint:
        try:
            tensors = load_safetensors(data)
            metadata = _metadata(data)
            if metadata.get("format") != FORMAT:
                raise CheckpointMismatchError(f"Not a forge checkpoint (format {metadata.get('format')!r}).")
            step, losses, seconds = (
                int(metadata["step"]),
                json.loads(metadata["losses"]),
                float(metadata["train_seconds"]),
            )
        except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as exc:
            if isinstance(exc, CheckpointMismatchError):
                raise
            raise CheckpointMismatchError(f"The forge checkpoint is damaged ({exc}).") from None
        lora: dict[str, torch.Tensor] = {}
        optimizer: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("lora."):
                lora[key.removeprefix("lora.")] = value
            elif key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optimizer.setdefault(int(index), {})[name] = value
        prior = tensors.get("prior_images")
        return cls(
            step=step,
            fingerprint=metadata["fingerprint"],
            lora=lora,
            optimizer=optimizer,
            rng_state=tensors["rng_state"],
            losses=[float(loss) for loss in losses],
            train_seconds=seconds,
            prior_images=None if prior is None else prior.numpy(),
        )


def _metadata(data: bytes) -> dict[str, str]:
    return read_header(data, "The forge checkpoint").get("__metadata__") or {}
