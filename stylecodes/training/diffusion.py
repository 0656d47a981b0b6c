"""What every diffusion training step shares: images to latents, prompts to embeddings, noise and its target.

The forward process is SD1.5's (1000 steps, scaled-linear betas 0.00085..0.012), the one the published DDIM sampler
(`stylecodes.pipelines.scheduler`) inverts, so a model trained here is sampled with the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from PIL import Image
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer


def make_noise_scheduler() -> DDPMScheduler:
    """The training-time forward process that matches `make_scheduler()`'s DDIM sampler."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
    )


def images_to_tensor(images: Sequence[Image.Image], size: int) -> Tensor:
    """RGB PIL images -> (B, 3, size, size) float32 in -1..1 (what the VAE takes)."""
    arrays = [np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)) for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()  # (B, 3, S, S) in 0..255
    return pixels / 127.5 - 1


def encode_latents(vae: AutoencoderKL, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3, H, W) in -1..1 -> (B, 4, H/8, W/8) scaled latents, sampled from the VAE's posterior."""
    posterior = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return posterior.sample(generator) * vae.config.scaling_factor


def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, texts: Sequence[str]) -> Tensor:
    """(B,) prompts -> (B, 77, D) text-encoder states, padded to the tokenizer's window as the pipeline does."""
    tokens = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(text_encoder.device)  # (B, 77)
    return text_encoder(tokens)[0]


def drop_prompts(texts: Sequence[str], probability: float, generator: torch.Generator) -> list[str]:
    """Replace each prompt by "" with `probability`: the model also learns the unconditional prediction for CFG."""
    keep = torch.rand(len(texts), generator=generator) >= probability
    return [text if kept else "" for text, kept in zip(texts, keep.tolist(), strict=True)]


def noisy_latents(
    scheduler: DDPMScheduler, latents: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(noisy latents, timesteps, noise): a random timestep per sample; the model is trained to predict the noise."""
    noise = torch.randn(latents.shape, generator=generator).to(latents)  # (B, 4, h, w)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    timesteps = timesteps.to(latents.device)
    return scheduler.add_noise(latents, noise, timesteps), timesteps, noise
