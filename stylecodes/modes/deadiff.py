"""The `deadiff` mode: DEADiff's style tokens in the UNet's style layers (`stylecodes.models.deadiff`).

A style image goes through DEADiff's style encoder once (batched, float32) and becomes a `DEADiffStyle`: its 16
tokens rounded to float16, which is also what the metadata records, so a repaint needs the tokens, never the
picture. Per generation the mode puts DEADiff's processors on the UNet's cross-attentions (`prepare`) and the
previous ones back (`finish`); the steps need no kwargs. As in DEADiff's sampler, the negative prompt's rows get
zero tokens; samples without a DEADiff style attend to the text alone.

Off unless the operator accepts DEADiff's licence (`stylecodes.models.deadiff.settings`); `stylecodes.loaders`
attaches the mode only then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch

from stylecodes.models.deadiff.model import DEADiffModel
from stylecodes.modes.base import BatchContext, StepConditioning, StyleInput, StyleMode
from stylecodes.styles import DEADIFF_MODE, DEADiffStyle, StyleImage


@dataclass(frozen=True)
class ResolvedDEADiff:
    style: DEADiffStyle  # the tokens (float16) and the strength they are painted at
    source: str  # "tokens" or "image": what the caller gave


class DEADiffMode(StyleMode):
    """DEADiff styles (`DEADiffStyle`, or a style image: `StyleImage(image, "deadiff")`) on `unet`."""

    name = DEADIFF_MODE
    # IP-Adapter modes put their own processors on the same cross-attentions.
    conflicts_with = frozenset({"instantstyle"})

    def __init__(self, model: DEADiffModel, unet: torch.nn.Module) -> None:
        self.model = model
        self.unet = unet
        self._restore: Callable[[], None] | None = None

    def resolve(self, inputs: Sequence[StyleInput | None]) -> list[ResolvedDEADiff | None]:
        resolved: list[ResolvedDEADiff | None] = [None] * len(inputs)
        images: list[tuple[int, PIL.Image.Image, float]] = []
        expected = (self.model.style_encoder.num_tokens, self.model.style_encoder.token_dim)
        for index, item in enumerate(inputs):
            if item is None or item.value is None:
                continue
            value = item.value
            if isinstance(value, DEADiffStyle):
                if value.tokens.shape != expected:
                    raise ValueError(
                        f"This DEADiff style has {value.tokens.shape[0]}x{value.tokens.shape[1]} tokens; the loaded "
                        f"DEADiff model makes and reads {expected[0]}x{expected[1]} (was it made by another model?)."
                    )
                resolved[index] = ResolvedDEADiff(value, "tokens")
            elif isinstance(value, StyleImage | PIL.Image.Image):
                image = value.image if isinstance(value, StyleImage) else value
                images.append((index, image, item.strength))
            else:
                raise ValueError(
                    "A deadiff style must be a DEADiffStyle (its tokens) or a style image, "
                    f"got {type(value).__name__}."
                )
        if images:  # one batched pass through CLIP and the Q-Former, in float32; a picture shared by samples once
            self._follow(self.unet.device, None)
            distinct = list({id(image): image for _, image, _ in images}.values())
            tokens = dict(zip(map(id, distinct), self.model.style_encoder.encode(distinct), strict=True))
            for index, image, strength in images:
                resolved[index] = ResolvedDEADiff(DEADiffStyle(tokens[id(image)].numpy(), strength), "image")
        return resolved

    def prepare(self, resolved: Sequence[ResolvedDEADiff | None], batch: BatchContext) -> StepConditioning | None:
        if all(item is None for item in resolved):
            return None
        self._follow(batch.device, batch.dtype)
        count, width = self.model.style_encoder.num_tokens, self.model.style_encoder.token_dim
        zeros = np.zeros((count, width), dtype=np.float16)
        styled = torch.from_numpy(np.stack([zeros if r is None else r.style.tokens for r in resolved]))  # (N, 16, C)
        weights = torch.tensor([0.0 if r is None else r.style.strength for r in resolved])  # (N,)
        rows = torch.tensor([r is not None for r in resolved])  # (N,) on the CPU: no device read-back needed
        if batch.cfg:  # [negative rows, prompt rows]: DEADiff gives the negative rows zero tokens
            styled = torch.cat([torch.zeros_like(styled), styled])
            weights, rows = torch.cat([weights, weights]), torch.cat([rows, rows])
        conditioning = self.model.conditioning(styled.float(), weights, rows)
        self.finish()  # (a previous call that was never finished)
        self._restore = self.model.install(self.unet, conditioning)
        return StepConditioning()  # the processors carry the conditioning; the UNet call needs no kwargs

    def metadata(self, resolved: ResolvedDEADiff | None) -> dict[str, Any]:
        if resolved is None:
            return {"deadiff_style": None, "deadiff_source": "none"}
        return {"deadiff_style": resolved.style.to_json(), "deadiff_source": resolved.source}

    def finish(self) -> None:
        if self._restore is not None:
            restore, self._restore = self._restore, None
            restore()

    def _follow(self, device: torch.device, dtype: torch.dtype | None) -> None:
        """Move the model to where the pipeline runs (its style encoder stays float32)."""
        projection = next(iter(self.model.image_kv.values())).to_k.weight
        if projection.device != torch.device(device):
            self.model.to(device=device)
        if dtype is not None and projection.dtype != dtype:
            self.model.to(dtype=dtype)
