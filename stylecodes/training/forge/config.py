"""`ForgeConfig`: the settings of one StyleForge run, with defaults chosen for a fast turnaround.

StyleForge (Park et al., 2024) publishes no learning rate or step count and fine-tunes the whole UNet and text
encoder. Here only LoRA matrices on the UNet's attention projections train (the paper's LoRA baseline, and what
fits a shared GPU), with DreamBooth-LoRA's usual settings: rank 8, lr 1e-4, AdamW, one StyleRef and one auxiliary
image per step. 500 steps at 512 px is the budget for <= 10 minutes per style on one H100, previews included (see
docs/benchmarks.md for what was measured).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PREVIEW_PROMPTS = (
    "a portrait of a woman",
    "a lighthouse on a cliff at dusk",
    "a busy city street",
    "a bowl of fruit on a table",
)


@dataclass(frozen=True)
class ForgeConfig:
    trigger: str = "sks"  # the "[V]" of "[V] style": a rare token the text encoder has no meaning for
    steps: int = 500  # StyleForge's ablation peaks between 250 and 1000 steps depending on the style
    learning_rate: float = 1e-4  # DreamBooth-LoRA's default; full fine-tuning would use ~1e-6
    rank: int = 8  # ~3 MB in fp16 on SD1.5; rank 4 underfits detailed styles, 16+ adds little
    alpha: float | None = None  # LoRA alpha; None = rank (LoRA scale 1 at strength 1)
    batch_size: int = 1  # StyleRef images per step (as many auxiliary images join them)
    resolution: int | None = None  # square training size in px; None = the base model's (512 for SD1.5)
    prior_loss_weight: float = 1.0  # weight of the auxiliary ("style") loss against the StyleRef loss
    prior_images: int = 20  # DreamBooth prior images to generate when no auxiliary folder is configured
    prior_prompts: tuple[str, ...] = (  # what those images show (trained with the plain "style" prompt)
        "a painting of a person, artwork",
        "a portrait, artwork",
        "people in a landscape, artwork",
        "a group of people, illustration",
    )
    prior_steps: int = 25  # DDIM steps per generated prior image
    checkpoint_every: int = 100  # steps between resumable checkpoints (and preview images)
    preview_prompts: tuple[str, ...] = DEFAULT_PREVIEW_PROMPTS  # four: the final 2x2 grid
    preview_steps: int = 20
    guidance_scale: float = 7.5  # for generated prior images and previews
    max_grad_norm: float = 1.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest (e.g. the style's name)

    def __post_init__(self) -> None:
        trigger = self.trigger.strip()
        if not trigger or any(character.isspace() for character in trigger) or len(trigger) > 32:
            raise ValueError(f"`trigger` must be one word of at most 32 characters, got {self.trigger!r}.")
        for name, low in (
            ("steps", 1),
            ("rank", 1),
            ("batch_size", 1),
            ("checkpoint_every", 1),
            ("preview_steps", 1),
            ("prior_steps", 1),
            ("prior_images", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        if self.rank > 128:
            raise ValueError(f"`rank` must be at most 128, got {self.rank}.")
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 8):
            raise ValueError(f"`resolution` must be a multiple of 8 and at least 64, got {self.resolution}.")
        if not 0 < self.learning_rate <= 1e-2:
            raise ValueError(f"`learning_rate` must be in (0, 0.01], got {self.learning_rate}.")
        if self.prior_loss_weight < 0:
            raise ValueError(f"`prior_loss_weight` must be >= 0, got {self.prior_loss_weight}.")
        if not self.preview_prompts or not self.prior_prompts:
            raise ValueError("`preview_prompts` and `prior_prompts` need at least one prompt each.")

    @property
    def style_prompt(self) -> str:
        """StyleRef images are trained with "[V] style"; it is also the trigger added to prompts at inference."""
        return f"{self.trigger.strip()} style"

    @property
    def auxiliary_prompt(self) -> str:
        """Auxiliary (or generated prior) images are trained with the plain class word: dual binding."""
        return "style"

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings a checkpoint must agree with to be resumed (everything that changes the trained weights)."""
        ignored = {"checkpoint_every", "preview_prompts", "preview_steps", "extra"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ignored}
