"""The one command that reproduces the demo model's weights (version 0), on CPU cores, from nothing downloaded:

    python -m stylecodes.demo.recipe --out stylecodes/demo/weights

1. VAE (`demo.base.train_vae`) on procedural pictures;
2. base text-to-image UNet and text encoder (`demo.base.train_base`) on (picture, prompt) pairs, then the VAE
   decoder alone (`demo.base.finetune_decoder`; the latent space the UNet learned stays the same);
3. the style autoencoder and control module with the base and the image encoder frozen, through
   `stylecodes.training.train` (the code behind `stylecodes train`) on procedural (style image, target, prompt)
   triples; the image encoder is a frozen, randomly initialised SigLIP-shaped tower (no SigLIP weights ship in a
   wheel: see docs/training.md);
4. export as a model-version folder (`stylecodes.training.export`) with its learned prior for random codes.

Each stage writes its result under `--work` and is skipped when it is already there, so an interrupted recipe goes
on where it stopped. `--scale 0.01` runs every stage for 1% of its steps (the tests' smoke run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stylecodes.demo import base
from stylecodes.demo.components import DEMO_AUTOENCODER_CONFIG, DemoComponents, build_demo_architecture
from stylecodes.training import data, procedural
from stylecodes.training.config import TrainConfig
from stylecodes.training.data import PROCEDURAL
from stylecodes.training.finish import export_run
from stylecodes.training.parts import load_parts
from stylecodes.training.train import latest_checkpoint, train
from stylecodes.versions import DEMO_VERSION

logger = logging.getLogger("stylecodes.demo.recipe")
CONTROL_STEPS = 1500
DEMO_TITLE = "Demo model (tiny, 64 px, trained offline on procedural palettes and patterns)"
DEMO_SHORT_TITLE = "demo, procedural styles"
# The base folder is a diffusers StableDiffusionPipeline folder without scheduler and safety checker.
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
}


def save_base(parts: DemoComponents, folder: Path) -> None:
    """The base model as a diffusers folder (`base/`) and the frozen image encoder (`image_encoder/`)."""
    for name in ("vae", "unet", "text_encoder", "tokenizer"):
        getattr(parts, name).save_pretrained(folder / "base" / name)
    (folder / "base" / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    parts.image_encoder.save_pretrained(folder / "image_encoder")


def run_base_stages(work: Path, config: base.BaseStageConfig) -> Path:
    """Stages 1 and 2; returns the folder holding `base/` and `image_encoder/`."""
    folder = work / "base-model"
    if (folder / "base" / "unet" / "config.json").is_file():
        logger.info("base model already trained in %s; skipping stages 1-2", folder)
        return folder
    parts = build_demo_architecture()
    started = time.perf_counter()
    base.train_vae(parts, config)
    logger.info("stage 1 (VAE) done in %.0fs", time.perf_counter() - started)
    save_base(parts, work / "vae-only")
    base.train_base(parts, config)
    logger.info("stage 2 (base UNet + text encoder) done in %.0fs", time.perf_counter() - started)
    base.finetune_decoder(parts, config)
    logger.info("stage 2b (VAE decoder fine-tune) done in %.0fs", time.perf_counter() - started)
    save_base(parts, folder)
    return folder


def control_config(work: Path, base_folder: Path, scale: float) -> TrainConfig:
    """Stage 3's settings: the paper's recipe (frozen base and image encoder, N(0, 1e-4) new layers, AdamW, prompt
    dropout, quantisation skipped, zero residual) at the demo's size, with two measured departures: the new layers
    keep their default initialisation (sigma 1e-4 everywhere left the autoencoder without gradient), and the
    learning rate is 5e-4, not 1e-6, because the demo must learn in 1,500 steps, not 100,000."""
    styles = save_validation_styles(work / "validation-styles")
    return TrainConfig(
        base_model=str(base_folder / "base"),
        image_encoder=str(base_folder / "image_encoder"),
        dataset=PROCEDURAL,
        output_dir=str(work / "control"),
        d_model=DEMO_AUTOENCODER_CONFIG["d_model"],
        init_std=0.0,  # sigma 1e-4 everywhere starves the autoencoder of gradient (see init_new_layers)
        num_heads=DEMO_AUTOENCODER_CONFIG["num_heads"],
        resolution=base.IMAGE_SIZE,
        batch_size=16,
        learning_rate=5e-4,
        lr_warmup_steps=max(1, round(100 * scale)),
        max_steps=max(2, round(CONTROL_STEPS * scale)),
        checkpoint_every=max(1, round(250 * scale)),
        validate_every=max(1, round(500 * scale)),
        validation_steps=20 if scale >= 1 else 2,
        validation_styles=[str(path) for path in styles],
        validation_prompts=["a large circle in the center", "two small squares across the picture"],
        dataloader_workers=0,  # one core: rendering a batch costs milliseconds
        version=DEMO_VERSION,
        title=DEMO_TITLE,
    )


def save_validation_styles(folder: Path) -> list[Path]:
    """Four held-out styles as PNG files (the validation grid reads files, as for any run)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, style in enumerate(procedural.HELD_OUT_STYLES[:4]):
        path = folder / f"{index}-{style.name.replace(' ', '-')}.png"
        procedural.style_image(style, np.random.default_rng(index)).save(path)
        paths.append(path)
    return paths


def run_control_stage(work: Path, base_folder: Path, out: Path, scale: float) -> Path:
    """Stage 3 (`stylecodes train` on procedural triples) and stage 4 (prior + export to `out`)."""
    config = control_config(work, base_folder, scale)
    parts = load_parts(config)
    dataset = data.open_dataset(PROCEDURAL, seed=config.seed)
    resume = latest_checkpoint(Path(config.output_dir)) is not None
    result = train(config, resume=resume, parts=parts, dataset=dataset)
    if result.interrupted:
        raise SystemExit(130)
    return export_run(
        config, result, parts, dataset, folder=out, short_title=DEMO_SHORT_TITLE,
        ship={"base": base_folder / "base", "image_encoder": base_folder / "image_encoder"},
        prior_rows=max(50, round(1000 * min(1.0, scale * 10))),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the version folder to write")
    parser.add_argument("--work", type=Path, default=Path("demo-recipe-work"), help="intermediate results")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every stage's steps (smoke runs)")
    parser.add_argument("--stages", default="base,control", help="comma-separated stages to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    config = base.BaseStageConfig()
    config = dataclasses.replace(
        config,
        vae_steps=max(1, round(config.vae_steps * args.scale)),
        unet_steps=max(1, round(config.unet_steps * args.scale)),
        decoder_steps=max(1, round(config.decoder_steps * args.scale)),
    )
    stages = set(args.stages.split(","))
    base_folder = run_base_stages(args.work, config) if "base" in stages else args.work / "base-model"
    if "control" in stages:
        started = time.perf_counter()
        folder = run_control_stage(args.work, base_folder, args.out, args.scale)
        logger.info("stages 3-4 (control module, prior, export) done in %.0fs: %s", time.perf_counter() - started,
                    folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "run_base_stages", "save_base"]
