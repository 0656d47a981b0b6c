"""What one image to paint is, as plain data: the request type, its ranges and the checks behind them.

Torch-free (numpy only), so the bot and the registry build and validate requests without loading a model; the
pipeline checks its own arguments with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stylecodes.codec import StyleCode

DEFAULT_STRENGTH = 0.9
STRENGTH_RANGE = (0.0, 1.5)  # above 1 the blend extrapolates past the collaboration output; 1.5 is plenty
DEFAULT_GUIDANCE_SCALE = 3.0
GUIDANCE_RANGE = (0.0, 30.0)
DEFAULT_STEPS = 20
# DDIM with steps_offset 1 would step past the last of the 1000 training timesteps at 1000 steps; images stop
# improving long before this bound anyway.
MAX_STEPS = 500
SIZE_RANGE = (64, 2048)  # pixels; multiples of 8 (the VAE's factor)
MAX_IMAGES_PER_CALL = 64
# One seed range everywhere (CLI, pipeline, bot, registry rows): 32 bits, what Discord's integer options, JSON
# numbers and other Stable Diffusion tools all carry exactly. (torch's generators would take up to 2**64 - 1.)
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """One image to paint. Checked when created: a bad field raises ValueError naming it, before any queueing."""

    prompt: str
    seed: int
    negative_prompt: str = ""
    style: StyleCode | None = None  # None: plain SD1.5, no style
    strength: float = DEFAULT_STRENGTH  # 0..1.5
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    width: int = 512
    height: int = 512

    def __post_init__(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"`{name}` must be a string, got {type(getattr(self, name)).__name__}.")
        if self.style is not None and not isinstance(self.style, StyleCode):
            raise ValueError(
                f"`style` must be a StyleCode or None (parse text with stylecodes.codec.parse_code), "
                f"got {type(self.style).__name__}."
            )
        checked = {
            "seed": check_int("seed", self.seed, 0, MAX_SEED),
            "strength": check_number("strength", self.strength, *STRENGTH_RANGE),
            "steps": check_int("steps", self.steps, 1, MAX_STEPS),
            "guidance_scale": check_number("guidance_scale", self.guidance_scale, *GUIDANCE_RANGE),
            "width": check_size("width", self.width),
            "height": check_size("height", self.height),
        }
        for name, value in checked.items():  # numpy scalars become Python numbers, so requests serialise as JSON
            object.__setattr__(self, name, value)

    def batch_key(self) -> tuple[int, float, int, int]:
        """Requests with equal keys can be painted in one batch."""
        return (self.steps, self.guidance_scale, self.width, self.height)


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"`{name}` must be an integer, got {describe(value)}.")
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be between {low} and {high}, got {value}.")
    return int(value)


def check_size(name: str, value: Any) -> int:
    check_int(name, value, *SIZE_RANGE)
    if value % 8:
        raise ValueError(
            f"`{name}` must be a multiple of 8 (the VAE works on 8x8 pixel blocks), got {value}; "
            f"try {max(SIZE_RANGE[0], value // 8 * 8)} or {value // 8 * 8 + 8}."
        )
    return int(value)


def check_number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"`{name}` must be a number, got {describe(value)}.")
    if not np.isfinite(value) or not low <= value <= high:
        raise ValueError(f"`{name}` must be between {low:g} and {high:g}, got {value}.")
    return float(value)


def describe(value: Any) -> str:
    """A short description of a bad argument for error messages."""
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:80]
