"""The ranges of a picture's settings and the checks behind them: errors name the argument and say what fits.

Torch-free (numpy only): the bot, the registry and the CLI check values with these before any model is loaded,
and the pipeline checks its own arguments with the same functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
