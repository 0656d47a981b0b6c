"""`ForgeBase`: the frozen SD1.5 parts a forge run trains against, and plain text-to-image sampling from them.

Training gets its own copy of the base (the LoRA is injected into this UNet), loaded like the engine's: version 0
is the demo model built in-process, version 1 the published base (local paths from the environment, else the Hub).
Sampling (generated prior images, previews) is diffusers' own `StableDiffusionPipeline` over the same modules, so
previews show exactly what the LoRA does to the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.versions import get_spec


@dataclass
class ForgeBase:
    vae: AutoencoderKL  # kept in float32: it only encodes the training images once and decodes previews
    text_encoder: Any  # CLIPTextModel
    tokenizer: Any  # CLIPTokenizer
    unet: UNet2DConditionModel  # in `dtype`; receives the trainable LoRA
    label: str  # where the base came from (recorded in the adapter's manifest)
    model_version: int

    @classmethod
    def load(cls, version: int, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> ForgeBase:
        """Version `version`'s base on `device`. `dtype` is the frozen weights' precision: float32 or bfloat16.

        float16 is refused: without loss scaling its gradients underflow, and bfloat16 is as fast on GPUs that
        train (Ampere and later).
        """
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"Training runs in float32 or bfloat16, not {dtype}; use bfloat16 on GPUs.")
        from stylecodes.loaders import load_version_base

        parts, label = load_version_base(get_spec(version))
        device = torch.device(device)
        parts["vae"].to(device, torch.float32)
        parts["text_encoder"].to(device, dtype)
        parts["unet"].to(device, dtype)
        return cls(parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["unet"], label, version)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def native_resolution(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def noise_scheduler(self) -> DDPMScheduler:
        """SD1.5's training schedule (the published sampler's betas, 1000 steps, epsilon prediction)."""
        return DDPMScheduler.from_config(make_scheduler().config)

    def autocast(self) -> Any:
        """Mixed precision for a bfloat16 base (LoRA weights stay float32); a no-op in float32."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)  # (P, 77)
        return self.text_encoder(tokens)[0].to(self.dtype)  # (P, 77, D)

    @torch.no_grad()
    def sample(
        self, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance_scale: float, size: int
    ) -> list[PIL.Image.Image]:
        """One image per prompt with the UNet as it is now (LoRA included), DDIM, each from its own seed."""
        pipeline = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=make_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.set_progress_bar_config(disable=True)
        was_training = self.unet.training
        self.unet.eval()
        try:
            with self.autocast():
                output = pipeline(
                    list(prompts),
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    height=size,
                    width=size,
                    generator=[torch.Generator().manual_seed(seed) for seed in seeds],
                )
        finally:
            self.unet.train(was_training)
        return list(output.images)


def image_grid(images: Sequence[PIL.Image.Image], columns: int = 2) -> PIL.Image.Image:
    """Images of one size side by side, `columns` per row (4 images: the 2x2 preview grid)."""
    width, height = images[0].size
    rows = -(-len(images) // columns)
    grid = PIL.Image.new("RGB", (columns * width, rows * height), "white")
    for index, image in enumerate(images):
        grid.paste(
            image.convert("RGB").resize((width, height)), ((index % columns) * width, (index // columns) * height)
        )
    return grid
