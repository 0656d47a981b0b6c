"""After training: fit the prior for random codes and export the run as a model-version folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylecodes.models.image_encoder import StyleImageEncoder
from stylecodes.training import data
from stylecodes.training.config import TrainConfig
from stylecodes.training.export import export_version
from stylecodes.training.parts import TrainingParts
from stylecodes.training.prior import fit_prior, prior_report
from stylecodes.training.train import TrainResult

logger = logging.getLogger(__name__)
PRIOR_ROWS = 2000  # style images encoded for the prior: 90% fit it, 10% measure it
ENCODE_BATCH = 32


def encode_training_styles(parts: TrainingParts, dataset: torch.utils.data.Dataset, rows: int, seed: int) -> np.ndarray:
    """(n, 20) style latents of up to `rows` style images of the dataset (unreadable rows skipped)."""
    encoder = StyleImageEncoder(parts.image_encoder, parts.control_model.sref_autoencoder, version=0)
    parts.control_model.eval()
    count = min(rows, len(dataset))
    indices = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False) if count < len(dataset) \
        else np.arange(count)
    latents = []
    for start in range(0, count, ENCODE_BATCH):
        items = [dataset[int(i)] for i in indices[start : start + ENCODE_BATCH]]
        styles = [item.style_image for item in items if isinstance(item, data.Triple)]
        if styles:
            latents.append(encoder.encode_latents(styles).numpy())
    return np.concatenate(latents)


def export_run(
    config: TrainConfig,
    result: TrainResult,
    parts: TrainingParts,
    dataset: torch.utils.data.Dataset,
    *,
    folder: Path | None = None,
    short_title: str | None = None,
    ship: dict[str, Path] | None = None,
    prior_rows: int = PRIOR_ROWS,
) -> Path:
    """Write `<output_dir>/model` (or `folder`): control weights, prior, manifest. `ship` copies folders in (the
    demo ships its own base and image encoder; a manifest entry equal to a shipped name then points inside)."""
    folder = folder or Path(config.output_dir) / "model"
    latents = encode_training_styles(parts, dataset, prior_rows, config.seed)
    split = max(1, len(latents) // 10)
    held_out, train_latents = latents[:split], latents[split:]
    prior = fit_prior(train_latents, seed=config.seed)
    report = prior_report(prior, train_latents, held_out, seed=config.seed)
    prior["report"] = report
    logger.info("prior: %d components; %s", prior["components"], report)
    training: dict[str, Any] = {
        "config": config.to_json(),
        "steps": result.step,
        "final_loss": float(np.mean(result.losses[-50:])) if result.losses else None,
        "bad_images": result.bad_images,
    }
    ship = ship or {}
    export_version(
        parts.control_model,
        folder,
        version=config.version,
        title=config.title,
        short_title=short_title,
        base_model="base" if "base" in ship else config.base_model,
        image_encoder="image_encoder" if "image_encoder" in ship else config.image_encoder,
        training=training,
        prior=prior,
        extra_folders=ship,
    )
    return folder
