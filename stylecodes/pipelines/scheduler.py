"""The sampler of the published pipeline."""

from __future__ import annotations

from diffusers import DDIMScheduler


def make_scheduler() -> DDIMScheduler:
    """The published sampler settings."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
