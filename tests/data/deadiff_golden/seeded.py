"""The golden's random weights, one seed per tensor name, so that the tensors the port does not read need no storage.

Shared by make_golden.py (which fills the original modules with them) and the tests (which rebuild the same
checkpoint); nothing else. Torch only, no model code.
"""

from __future__ import annotations

import zlib

import torch

# Normalisation scales start near 1 (as trained ones do); other vectors and the matrices are small random values.
_NORM_SCALES = (
    "norm.weight", "LayerNorm.weight", "ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_vision.weight",
    "norm1.weight", "norm2.weight", "norm3.weight", "in_layers.0.weight", "out_layers.0.weight", "out.0.weight",
)


def seeded_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor for checkpoint key `name`, the same on every machine, exactly representable in float16."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    noise = torch.randn(shape, generator=generator)
    if name.endswith(_NORM_SCALES):
        value = 1 + 0.1 * noise
    elif len(shape) <= 1:
        value = 0.1 * noise
    else:
        value = noise / (noise[0].numel() ** 0.5)  # fan-in scaling keeps activations near unit size
    return value.half().float()


def is_regenerated(key: str) -> bool:
    """Floating-point keys the golden file does not store: the SD UNet's own weights (DEADiff leaves them frozen)
    and the content branch (the port does not use it). Everything DEADiff trained that the port reads is stored."""
    if key.startswith("model.diffusion_model."):
        return ".attn2.i_to_" not in key
    return key.startswith(("content_blip.", "content_proj_layer."))
