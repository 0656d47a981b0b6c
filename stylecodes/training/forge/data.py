"""Training data for a forge run: square crops, their latents encoded once, and random draws from them.

The VAE runs once per image (and once for its mirror image) before training, instead of once per step: each step
then draws a latent from the cached distribution (mean + std * noise), which is what encoding the image again would
give. Every random choice comes from one CPU generator, so a resumed run draws exactly what the original would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from stylecodes.training.forge.base import ForgeBase


def square_crop(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """Resize the short side to `size` and keep the centre square (what StyleRef sets are trained on)."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.convert("RGB").resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), PIL.Image.Resampling.BICUBIC
    )
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


@dataclass
class LatentSet:
    """Cached latent distributions of a set of images and their mirror images."""

    mean: torch.Tensor  # (N, 2, 4, h, w): [:, 0] the image, [:, 1] mirrored
    std: torch.Tensor  # (N, 2, 4, h, w)
    scaling_factor: float

    @classmethod
    @torch.no_grad()
    def encode(cls, base: ForgeBase, images: Sequence[PIL.Image.Image], size: int, batch: int = 8) -> LatentSet:
        crops = np.stack([np.asarray(square_crop(image, size), dtype=np.float32) for image in images])  # (N, H, W, 3)
        pixels = torch.from_numpy(crops).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, 3, H, W) in [-1, 1]
        pixels = torch.stack([pixels, pixels.flip(-1)], dim=1).flatten(0, 1)  # (2N, 3, H, W)
        means, stds = [], []
        for start in range(0, len(pixels), batch):
            chunk = pixels[start : start + batch].to(base.vae.device, base.vae.dtype)
            distribution = base.vae.encode(chunk).latent_dist
            means.append(distribution.mean.float())
            stds.append(distribution.std.float())
        mean, std = torch.cat(means), torch.cat(stds)  # (2N, 4, h, w)
        shape = (len(images), 2, *mean.shape[1:])
        return cls(mean.reshape(shape), std.reshape(shape), float(base.vae.config.scaling_factor))

    def __len__(self) -> int:
        return self.mean.shape[0]

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` scaled latents: random images, random mirroring, a fresh sample of each distribution."""
        index = torch.randint(len(self), (count,), generator=generator)
        flip = torch.randint(2, (count,), generator=generator)
        noise = torch.randn((count, *self.mean.shape[2:]), generator=generator).to(self.mean.device)
        mean, std = self.mean[index, flip], self.std[index, flip]  # (count, 4, h, w)
        return (mean + std * noise) * self.scaling_factor


def images_to_array(images: Sequence[PIL.Image.Image]) -> np.ndarray:
    """(N, H, W, 3) uint8 of same-sized RGB images (generated prior images, kept in checkpoints)."""
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])


def array_to_images(array: np.ndarray) -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(np.ascontiguousarray(item)) for item in array]
