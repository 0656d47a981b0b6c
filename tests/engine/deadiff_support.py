"""The DEADiff golden (tests/data/deadiff_golden) as test objects: the original's tiny checkpoint, rebuilt and
converted, and the diffusers UNet its SD part maps to."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "deadiff_golden"


def _seeded_module() -> Any:
    spec = importlib.util.spec_from_file_location("deadiff_golden_seeded", GOLDEN_DIR / "seeded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Golden:
    meta: dict[str, Any]
    data: dict[str, torch.Tensor]
    checkpoint: dict[str, torch.Tensor]  # deadiff_v1.ckpt's layout, float32

    def convert_kwargs(self) -> dict[str, Any]:
        """The tiny model's settings the converter cannot read from shapes."""
        return {
            "condition_token_ids": self.meta["condition_token_ids"]["style"],
            "vision_heads": self.meta["clip_vision"]["num_attention_heads"],
            "qformer_heads": self.meta["qformer"]["num_attention_heads"],
        }

    def unet_config(self) -> dict[str, Any]:
        """The diffusers config of the original's tiny `HierarchicalUNetModel`."""
        ldm = self.meta["unet"]
        levels = len(ldm["channel_mult"])
        return {
            "sample_size": ldm["image_size"],
            "in_channels": ldm["in_channels"],
            "out_channels": ldm["out_channels"],
            "down_block_types": ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1),
            "block_out_channels": [ldm["model_channels"] * m for m in ldm["channel_mult"]],
            "layers_per_block": ldm["num_res_blocks"],
            "cross_attention_dim": ldm["context_dim"],
            "attention_head_dim": ldm["num_heads"],  # diffusers' legacy name for the head count
            "norm_num_groups": 32,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        }

    def unet(self) -> UNet2DConditionModel:
        """The original's SD part as a diffusers UNet (diffusers' own ldm -> diffusers conversion)."""
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        unet = UNet2DConditionModel(**self.unet_config()).eval()
        base = {key: value for key, value in self.checkpoint.items() if ".i_to_" not in key}
        unet.load_state_dict(convert_ldm_unet_checkpoint(base, unet.config), strict=True)
        return unet.requires_grad_(False)

    def reference_images(self) -> list:
        from PIL import Image

        return [Image.fromarray(array) for array in self.data["input.reference_images"].numpy()]

    def guidance_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, timesteps, text) of the original's guidance batch: [negative rows, prompt rows]."""
        batch = self.meta["batch"]
        text = torch.cat(
            [self.data["input.negative_text_embeds"].expand(batch, -1, -1), self.data["input.text_embeds"]]
        )
        latents = torch.cat([self.data["input.latents"]] * 2)
        return latents, torch.tensor(self.meta["timesteps"] * 2), text


def load_golden() -> Golden:
    meta = json.loads((GOLDEN_DIR / "golden.json").read_text())
    data = load_file(str(GOLDEN_DIR / "golden.safetensors"))
    prefix = "checkpoint."
    checkpoint = {
        key.removeprefix(prefix): value.float() if value.is_floating_point() else value
        for key, value in data.items()
        if key.startswith(prefix)
    }
    seeded = _seeded_module()
    for key, shape in meta["regenerated"].items():
        checkpoint[key] = seeded.seeded_tensor(key, tuple(shape))
    return Golden(meta, data, checkpoint)


def save_lightning_checkpoint(state_dict: dict[str, torch.Tensor], path: Path, **extra: Any) -> Path:
    """`state_dict` the way PyTorch Lightning saves it (plus `extra` top-level entries)."""
    torch.save({"epoch": 3, "global_step": 1234, "state_dict": state_dict, **extra}, path)
    return path
