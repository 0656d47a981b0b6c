"""The `stylecode` mode: the published method. A 20-value code, decoded once per generation into a style map that
seeds the control module's second stream (`StyleCodesControlModel`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor

from stylecodes.codec import LATENT_DIM, StyleCode, parse_code
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.image_encoder import StyleImageEncoder
from stylecodes.modes.base import BatchContext, StepConditioning, StyleInput, StyleMode
from stylecodes.styles import STYLECODE_MODE, CodeStyle, StyleImage
from stylecodes.versions import UnservedVersionError


@dataclass(frozen=True)
class ResolvedCode:
    latent: Tensor  # (20,) float32 on the CPU: the dequantised code (or a raw latent)
    code: StyleCode | None  # None for a raw latent
    source: str  # "code", "latent" or "image": what the caller gave
    strength: float


class StylecodeMode(StyleMode):
    """Codes, their text, raw (20,) latents (numpy or torch) and style images (through SigLIP and the 6-bit code).

    `image_encoder` is called only when a style image is given; building one needs SigLIP, which a pipeline may lack.
    """

    name = STYLECODE_MODE

    def __init__(
        self, control_model: StyleCodesControlModel, image_encoder: Callable[[], StyleImageEncoder], version: int
    ) -> None:
        self.control_model = control_model
        self.image_encoder = image_encoder
        self.version = version

    def resolve(self, inputs: Sequence[StyleInput | None]) -> list[ResolvedCode | None]:
        resolved: list[ResolvedCode | None] = [None] * len(inputs)
        images: list[tuple[int, PIL.Image.Image, float]] = []
        for index, item in enumerate(inputs):
            if item is None or item.value is None:
                continue
            value = item.value.code if isinstance(item.value, CodeStyle) else item.value
            if isinstance(value, StyleImage):
                images.append((index, value.image, item.strength))
            elif isinstance(value, PIL.Image.Image):
                images.append((index, value, item.strength))
            else:
                resolved[index] = self._resolve_one(value, item.strength)
        if images:  # one batched pass through SigLIP; the style goes through the 6-bit code, as published
            codes = self.image_encoder().encode([image for _, image, _ in images])
            for (index, _, strength), code in zip(images, codes, strict=True):
                resolved[index] = ResolvedCode(torch.from_numpy(code.latent()), code, "image", strength)
        return resolved

    def _resolve_one(self, value: Any, strength: float) -> ResolvedCode:
        if isinstance(value, str):
            value = parse_code(value)  # CodeError says exactly what is wrong with the text
        if isinstance(value, StyleCode):
            if value.version != self.version:
                raise UnservedVersionError(value.version, [self.version])
            return ResolvedCode(torch.from_numpy(value.latent()), value, "code", strength)
        if isinstance(value, np.ndarray | Tensor):
            latent = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
            if tuple(latent.shape) != (LATENT_DIM,) or not bool(torch.isfinite(latent).all()):
                shape = tuple(latent.shape)
                raise ValueError(f"A `style` latent must be {LATENT_DIM} finite values, got shape {shape}.")
            return ResolvedCode(latent, None, "latent", strength)
        raise ValueError(
            "Each `style` must be a StyleCode, a code string, a 20-value latent, a PIL image, a style from "
            f"stylecodes.styles or None, got {type(value).__name__}."
        )

    def prepare(self, resolved: Sequence[ResolvedCode | None], batch: BatchContext) -> StepConditioning | None:
        if all(item is None or item.strength == 0 for item in resolved):
            return None
        zeros = torch.zeros(LATENT_DIM)  # placeholder for unstyled samples; scale 0 makes its map irrelevant
        # (N, 20) float32: decode_style decodes in float32 and returns the map in the control stream's dtype
        latents = torch.stack([zeros if item is None else item.latent for item in resolved]).to(batch.device)
        scales = [0.0 if item is None else item.strength for item in resolved]
        style_map = self.control_model.decode_style(latents, *batch.latent_size)  # (N, C_mid, h/8, w/8)
        scale = torch.tensor(scales, dtype=torch.float64)  # (N,) on the CPU: prepare_style reads it without a sync
        if batch.cfg:  # the published pipeline styles both halves of the guidance batch
            style_map, scale = torch.cat([style_map] * 2), torch.cat([scale] * 2)
        prepared = self.control_model.prepare_style(style_map, scale)  # which rows are styled, worked out once
        return StepConditioning(control=prepared)

    def metadata(self, resolved: ResolvedCode | None) -> dict[str, Any]:
        if resolved is None:
            return {"style_code": None, "style_latent": None, "style_source": "none"}
        return {
            "style_code": None if resolved.code is None else resolved.code.canonical,
            "style_latent": resolved.latent.tolist() if resolved.source == "latent" else None,
            "style_source": resolved.source,
            "strength": resolved.strength,
        }
