"""Validation grids during training: fixed style images x the preview prompts, painted with the current weights.

Row i starts with style image i, then one picture per prompt (same seeds every time, so grids of successive steps
compare directly). Saved as `validation/step-<step>.png` and, with TensorBoard logging, as an image there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylecodes.codec import dequantize, quantize
from stylecodes.images import load_image
from stylecodes.models.image_encoder import StyleImageEncoder
from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.pipelines.text_to_image import StyleCodesPipeline
from stylecodes.training.config import TrainConfig
from stylecodes.training.parts import TrainingParts

logger = logging.getLogger(__name__)
VALIDATION_SEED = 1234


def paint_grid(
    parts: TrainingParts, styles: list[Image.Image], prompts: list[str], *, size: int, steps: int, version: int
) -> Image.Image:
    """(len(styles)) x (1 + len(prompts)) grid: each style image, then each prompt painted with its code."""
    encoder = StyleImageEncoder(parts.image_encoder, parts.control_model.sref_autoencoder, version=version)
    latents = [dequantize(quantize(latent.numpy())) for latent in encoder.encode_latents(styles)]  # via 6 bits
    pipeline = StyleCodesPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        control_model=parts.control_model, scheduler=make_scheduler(), image_encoder=parts.image_encoder,
        model_version=version,
    )
    pipeline.set_progress_bar_config(disable=True)
    grid = Image.new("RGB", (size * (1 + len(prompts)), size * len(styles)), "white")
    for row, (style, latent) in enumerate(zip(styles, latents, strict=True)):
        grid.paste(style.convert("RGB").resize((size, size)), (0, row * size))
        output = pipeline(
            prompt=prompts, style=[latent] * len(prompts), seed=VALIDATION_SEED, num_inference_steps=steps,
            width=size, height=size,
        )
        for column, image in enumerate(output.images, start=1):
            grid.paste(image, (column * size, row * size))
    return grid


def save_validation_grid(parts: TrainingParts, config: TrainConfig, step: int, accelerator) -> Path:
    control = parts.control_model
    was_training = control.training
    control.eval()
    try:
        styles = [load_image(path) for path in config.validation_styles]
        with torch.no_grad(), accelerator.autocast():
            grid = paint_grid(parts, styles, config.validation_prompts, size=config.resolution,
                              steps=config.validation_steps, version=config.version)
    finally:
        control.train(was_training)
    path = Path(config.output_dir) / "validation" / f"step-{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", np.asarray(grid), step, dataformats="HWC")
    logger.info("validation grid: %s", path)
    return path
