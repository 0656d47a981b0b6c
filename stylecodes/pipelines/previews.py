"""Cheap step previews: SD latents to small RGB images without the VAE."""

from __future__ import annotations

import PIL.Image
import torch
from torch import Tensor

# SD1.5's latent -> RGB approximation (a least-squares fit of VAE decodes), for cheap step previews.
_LATENT_RGB_FACTORS = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


def latent_previews(latents: Tensor) -> list[PIL.Image.Image]:
    """(B, 4, h, w) SD latents -> B small RGB images (one pixel per latent position) without the VAE."""
    rgb = torch.einsum("bchw,cr->brhw", latents.float().cpu(), _LATENT_RGB_FACTORS)  # (B, 3, h, w), about -1..1
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (B, h, w, 3)
    return [PIL.Image.fromarray(array, mode="RGB") for array in pixels]
