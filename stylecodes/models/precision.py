"""Pinning a module to float32 whatever the pipeline around it is cast to.

The style image encoder (SigLIP and the autoencoder) must give the same code for the same image on a GPU worker in
fp16 as in the CPU command line: in half precision a value near a quantisation boundary can land on the next level.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

ENCODER_DTYPE = torch.float32


def keep_float32(module: nn.Module) -> nn.Module:
    """Pin `module` to float32: later casts (`.to(dtype)`, `.half()`, a pipeline's `.to(device, dtype)`) move it to
    their device but leave its dtype alone. Returns `module`, converted to float32 now if it was not.

    A cast to half precision and back would lose the weights' precision for good, so casts are filtered as they
    happen (this instance's `_apply`, through which every nn.Module cast goes) instead of being undone afterwards.
    """
    if vars(module).get("_float32_pinned"):
        return module
    unpinned_apply = module._apply

    def pinned_apply(fn: Callable[[Tensor], Tensor], recurse: bool = True) -> nn.Module:
        first = next(itertools.chain(module.parameters(), module.buffers()), None)
        probe = fn(torch.empty(0, dtype=ENCODER_DTYPE, device=first.device if first is not None else "cpu"))
        if probe.dtype != ENCODER_DTYPE:  # a dtype cast (perhaps with a move): keep only the move
            fn = _move_only(probe.device)
        return unpinned_apply(fn, recurse)

    module._apply = pinned_apply
    module._float32_pinned = True
    tensors = itertools.chain(module.parameters(), module.buffers())
    if any(tensor.is_floating_point() and tensor.dtype != ENCODER_DTYPE for tensor in tensors):
        module.to(ENCODER_DTYPE)  # (only when needed: diffusers models log a warning on every dtype cast)
    return module


def _move_only(device: torch.device) -> Callable[[Tensor], Tensor]:
    return lambda tensor: tensor.to(device=device)
