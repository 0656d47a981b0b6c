"""`TrainConfig`: every setting of a StyleCodes training run, with the paper's values as defaults (§3.4)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    # What to train on.
    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # any SD1.5-family diffusers folder or Hub id
    image_encoder: str = "google/siglip-base-patch16-224"  # SigLIP folder or Hub id (frozen)
    dataset: str = "procedural"  # a dataset folder (imagefolder), a Hub dataset id, or `procedural`
    style_column: str = "style_image"
    image_column: str = "image"
    text_column: str = "text"
    output_dir: str = "stylecodes-training"
    # The model: the autoencoder's size (published: d_model 512, 4 heads) and the new layers' initialisation.
    d_model: int = 512
    num_heads: int = 4
    init_std: float = 1e-4  # paper: new layers start as white noise with sigma 1e-4 (0: the layers' default
    # initialisation); the residual path into the base starts at zero either way
    init_from: int | None = None  # a served version digit (e.g. 1) whose control module is fine-tuned instead
    # Optimisation: the paper's batch 25, learning rate 1e-6, 100k steps; AdamW with torch's defaults otherwise.
    resolution: int = 512  # SD1.5's native size; the paper downsampled its 1024 px triples to this
    batch_size: int = 25  # per optimiser step, over all processes and accumulation steps together
    learning_rate: float = 1e-6
    max_steps: int = 100_000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 0  # the paper used a constant rate
    prompt_dropout: float = 0.1  # share of prompts replaced by "" so classifier-free guidance works
    conditioning_scale: float = 1.0  # the control module's blend during training (inference default: 0.9)
    quantize_aware: bool = False  # paper: the 6-bit step is skipped in training; True: straight-through 6 bits
    # Machinery.
    mixed_precision: str = "no"  # no, fp16 or bf16 (accelerate); the trained weights stay float32
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    validate_every: int = 1000
    validation_styles: list[str] = field(default_factory=list)  # style image files for the validation grid
    validation_prompts: list[str] = field(default_factory=lambda: ["a close up man", "a cow", "a bottle on a desk"])
    validation_steps: int = 20
    log_with: str = "csv"  # csv (always written) or tensorboard (as well, when installed)
    dataloader_workers: int = 2
    seed: int = 0
    # The version this run becomes when exported.
    version: int = 2
    title: str = "StyleCodes (trained with `stylecodes train`)"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))

    def check(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        if self.batch_size < 1 or self.max_steps < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("`batch_size`, `max_steps` and `gradient_accumulation_steps` must be at least 1.")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be a multiple of `gradient_accumulation_steps` "
                f"({self.gradient_accumulation_steps}): each micro-batch has batch_size / accumulation rows."
            )
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be positive, got {self.learning_rate}.")
        if not 0 <= self.prompt_dropout < 1:
            raise ValueError(f"`prompt_dropout` must be in [0, 1), got {self.prompt_dropout}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"`mixed_precision` must be no, fp16 or bf16, got {self.mixed_precision!r}.")
        if self.resolution % 8:
            raise ValueError(f"`resolution` must be a multiple of 8, got {self.resolution}.")
        if not 0 <= self.version <= 9:
            raise ValueError(f"`version` must be one digit (0-9), got {self.version}.")
        for name in ("checkpoint_every", "validate_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1.")
