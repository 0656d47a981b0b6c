"""Training the demo's base model from scratch: its VAE, then its text-to-image UNet and text encoder.

The real StyleCodes starts from a pretrained Stable Diffusion 1.5; no pip package ships one, so the demo trains
its own tiny SD1.5-shaped base on procedural pictures (`stylecodes.training.procedural`): random styles painted on
scenes that the prompts describe. The base learns to paint the scene and picks a style at random; the stylecode
is what pins the style (stage 3, `stylecodes train`).

Plain torch loops on the CPU (the models are a few million parameters); seeded, so a run reproduces its weights on
the same machine and library versions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from stylecodes.demo.components import DemoComponents
from stylecodes.training import procedural
from stylecodes.training.diffusion import (
    drop_prompts,
    encode_latents,
    encode_prompts,
    images_to_tensor,
    make_noise_scheduler,
    noisy_latents,
)

logger = logging.getLogger(__name__)
IMAGE_SIZE = 64


@dataclass
class BaseStageConfig:
    vae_steps: int = 800  # flat colours and coarse patterns: the reconstruction loss has flattened by then
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-5  # small, as SD's VAE: a nearly deterministic code, but a bounded latent scale
    decoder_steps: int = 1200  # stage 2b: the VAE decoder alone, the latent space unchanged (as SD's ft-MSE VAE)
    decoder_lr: float = 1e-3
    unet_steps: int = 2500
    unet_lr: float = 1e-3
    batch_size: int = 16
    prompt_dropout: float = 0.1  # unconditional samples for classifier-free guidance
    seed: int = 0
    log_every: int = 50


def _batch(rng: np.random.Generator, size: int) -> tuple[list, list[str]]:
    images, prompts = [], []
    for _ in range(size):
        style, scene = procedural.random_style(rng), procedural.random_scene(rng)
        images.append(procedural.render(style, scene, IMAGE_SIZE, phase=float(rng.uniform())))
        prompts.append(scene.prompt)
    return images, prompts


def train_vae(parts: DemoComponents, config: BaseStageConfig) -> list[float]:
    """Reconstruction (L1 + MSE) plus a small KL term; then sets `scaling_factor` so latents have unit variance."""
    vae = parts.vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.vae_steps)
    rng, generator = np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed)
    losses, started = [], time.perf_counter()
    for step in range(1, config.vae_steps + 1):
        images, _ = _batch(rng, config.batch_size)
        pixels = images_to_tensor(images, IMAGE_SIZE)  # (B, 3, 64, 64)
        posterior = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels)
        loss = loss + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % config.log_every == 0:
            logger.info("vae step %d/%d loss %.4f (%.0fs)", step, config.vae_steps, np.mean(losses[-50:]),
                        time.perf_counter() - started)
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # SD's convention: scale latents to unit variance for the diffusion model
        pixels = images_to_tensor(_batch(rng, 256)[0], IMAGE_SIZE)
        std = vae.encode(pixels).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return losses


def train_base(parts: DemoComponents, config: BaseStageConfig) -> list[float]:
    """Noise-prediction MSE for the UNet and the text encoder jointly, on (picture, prompt) pairs, VAE frozen."""
    unet, text_encoder = parts.unet.train().requires_grad_(True), parts.text_encoder.train().requires_grad_(True)
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.unet_lr, total_steps=config.unet_steps, pct_start=0.05
    )
    scheduler = make_noise_scheduler()
    rng, generator = np.random.default_rng(config.seed + 1), torch.Generator().manual_seed(config.seed + 1)
    losses, started = [], time.perf_counter()
    for step in range(1, config.unet_steps + 1):
        images, prompts = _batch(rng, config.batch_size)
        with torch.no_grad():
            latents = encode_latents(parts.vae, images_to_tensor(images, IMAGE_SIZE), generator)  # (B, 4, 8, 8)
        noisy, timesteps, noise = noisy_latents(scheduler, latents, generator)
        text = encode_prompts(parts.tokenizer, text_encoder, drop_prompts(prompts, config.prompt_dropout, generator))
        loss = F.mse_loss(unet(noisy, timesteps, text).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % config.log_every == 0:
            logger.info("base step %d/%d loss %.4f (%.0fs)", step, config.unet_steps, np.mean(losses[-50:]),
                        time.perf_counter() - started)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return losses


def finetune_decoder(parts: DemoComponents, config: BaseStageConfig) -> list[float]:
    """The VAE decoder alone on reconstruction (encoder frozen, latents = posterior means): the latent space the
    UNet was trained on stays the same, the colours and edges it decodes to get sharper (SD's ft-MSE VAE did this).
    """
    vae = parts.vae
    vae.eval().requires_grad_(False)
    decoder = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for parameter in decoder:
        parameter.requires_grad_(True)
    vae.decoder.train()
    optimizer = torch.optim.AdamW(decoder, lr=config.decoder_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.decoder_steps)
    rng = np.random.default_rng(config.seed + 2)
    losses, started = [], time.perf_counter()
    for step in range(1, config.decoder_steps + 1):
        pixels = images_to_tensor(_batch(rng, config.batch_size)[0], IMAGE_SIZE)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mean
        reconstruction = vae.decode(latents).sample
        loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % config.log_every == 0:
            logger.info("decoder step %d/%d loss %.4f (%.0fs)", step, config.decoder_steps, np.mean(losses[-50:]),
                        time.perf_counter() - started)
    vae.eval().requires_grad_(False)
    return losses
