"""DEADiff's joint text-image cross-attention as diffusers attention processors on an SD1.x UNet.

Every cross-attention of the UNet attends to the text and to 16 image tokens at once (the paper's Fig. 2b):

    K = [text W_K ; w * tokens W_K'],  V = [text W_V ; w * tokens W_V'],  out = softmax(Q K^T / sqrt(d)) V

with W_K', W_V' trained and `w` DEADiff's `img_weight` (1.0 by default). Which tokens a layer reads is the
disentanglement: the 11 fine layers read the style Q-Former's tokens; the 5 coarse ones (`CONTENT_LAYERS`: the
lowest-resolution down block, the mid block, the first up block with attention) read the content Q-Former's.
DEADiff's style mode gives the content layers zeros, and zeros through a bias-free projection are zero keys and
values: those layers attend to the text plus 16 zero tokens, which only rescale the softmax. So only the style
layers need weights, and the content Q-Former is never run. Without guidance's condition (the negative prompt's
rows) every layer gets zeros, as in DEADiff's sampler.

Layers are numbered in the original's order (down blocks, mid block, up blocks; SD1.5 has 16); a batch may mix rows
with and without DEADiff: rows without it attend to the text alone (their image keys are masked out): the plain
UNet, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn

CONTENT_LAYERS = (4, 5, 6, 7, 8)  # configs/inference_deadiff_512x512.yaml, `content_layer`


class ImageKeyValue(nn.Module):
    """One style layer's trained projections of the image tokens (DEADiff's `attn2.i_to_k` / `attn2.i_to_v`)."""

    def __init__(self, token_dim: int, inner_dim: int) -> None:
        super().__init__()
        self.to_k = nn.Linear(token_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(token_dim, inner_dim, bias=False)


@dataclass
class DEADiffConditioning:
    """A generation's image tokens, rows in UNet-batch order (guidance halves included); built once, read by every
    step. `tokens` rows are zeros where DEADiff gives a row no image (the negative prompt's rows)."""

    tokens: Tensor  # (B, 16, C): the style tokens each row's style layers read
    weight: Tensor  # (B, 1, 1): DEADiff's img_weight per row
    rows: Tensor | None  # (B,) bool: rows that take part; None when every row does
    _masks: dict[tuple[int, torch.device], Tensor] = field(default_factory=dict, repr=False)

    def key_mask(self, text_tokens: int) -> Tensor | None:
        """(B, 1, 1, text + 16) bool, False on the image keys of rows without DEADiff; None when all rows have it."""
        if self.rows is None:
            return None
        cache_key = (text_tokens, self.tokens.device)
        mask = self._masks.get(cache_key)
        if mask is None:
            batch, count = self.rows.shape[0], self.tokens.shape[1]
            mask = torch.ones(batch, 1, 1, text_tokens + count, dtype=torch.bool, device=self.tokens.device)
            mask[:, 0, 0, text_tokens:] = self.rows.view(batch, 1)
            self._masks[cache_key] = mask
        return mask


class DEADiffAttnProcessor:
    """Cross-attention over [text ; image tokens] for one layer. `image_kv` None: a content layer (zero tokens)."""

    def __init__(self, image_kv: ImageKeyValue | None, conditioning: DEADiffConditioning) -> None:
        self.image_kv = image_kv
        self.conditioning = conditioning

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
    ) -> Tensor:
        if encoder_hidden_states is None:
            raise ValueError("DEADiff's processor is for cross-attention layers (attn2); it got no text states.")
        conditioning = self.conditioning
        batch, text_tokens, _ = encoder_hidden_states.shape
        if conditioning.tokens.shape[0] != batch:
            raise ValueError(
                f"The DEADiff conditioning was prepared for a batch of {conditioning.tokens.shape[0]} UNet rows, "
                f"but this step has {batch}."
            )
        query = attn.to_q(hidden_states)  # (B, HW, inner)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)  # (B, T, inner)
        if self.image_kv is None:  # a content layer: zero tokens through a bias-free projection
            image_key = image_value = key.new_zeros(batch, conditioning.tokens.shape[1], key.shape[-1])
        else:
            tokens = conditioning.tokens.to(key.dtype)
            image_key = conditioning.weight * self.image_kv.to_k(tokens)  # (B, 16, inner)
            image_value = conditioning.weight * self.image_kv.to_v(tokens)
        key = torch.cat([key, image_key], dim=1)  # (B, T + 16, inner)
        value = torch.cat([value, image_value], dim=1)

        mask = conditioning.key_mask(text_tokens)
        if attention_mask is not None:  # a text mask (additive, as the UNet prepares it): image keys stay visible
            text_mask = attn.prepare_attention_mask(attention_mask, text_tokens, batch)
            text_mask = text_mask.view(batch, attn.heads, -1, text_tokens)
            text_mask = F.pad(text_mask, (0, image_key.shape[1]))
            mask = text_mask if mask is None else text_mask.masked_fill(~mask, float("-inf"))

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)  # (B, heads, HW, d)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
        return hidden_states / attn.rescale_output_factor


def cross_attentions(unet: UNet2DConditionModel) -> Iterator[tuple[str, Attention]]:
    """The UNet's cross-attention modules in DEADiff's layer order: down blocks, mid block, up blocks."""
    blocks = [("down_blocks", block) for block in unet.down_blocks]
    blocks.append(("mid_block", unet.mid_block))
    blocks.extend(("up_blocks", block) for block in unet.up_blocks)
    counters = {"down_blocks": 0, "up_blocks": 0}
    for kind, block in blocks:
        prefix = kind if kind == "mid_block" else f"{kind}.{counters[kind]}"
        if kind != "mid_block":
            counters[kind] += 1
        for index, transformer in enumerate(getattr(block, "attentions", None) or []):
            for depth, layer in enumerate(transformer.transformer_blocks):
                yield f"{prefix}.attentions.{index}.transformer_blocks.{depth}.attn2", layer.attn2


def check_cross_attentions(unet: UNet2DConditionModel, inner_dims: list[int], token_dim: int) -> list[Attention]:
    """The UNet's cross-attentions in layer order, checked against what the DEADiff weights were trained for."""
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"`unet` must be a diffusers UNet2DConditionModel, got {type(unet).__name__}.")
    layers = list(cross_attentions(unet))
    if len(layers) != len(inner_dims):
        raise ValueError(
            f"The DEADiff weights are for a UNet with {len(inner_dims)} cross-attention layers (SD1.x); this UNet "
            f"has {len(layers)}."
        )
    for (name, attn), inner_dim in zip(layers, inner_dims, strict=True):
        if "transformer_blocks.0." not in name:
            raise ValueError(f"DEADiff needs one transformer per attention block; this UNet has {name}.")
        unsupported = [
            feature
            for feature in ("spatial_norm", "group_norm", "norm_q", "norm_k", "norm_cross")
            if getattr(attn, feature, None) is not None
        ]
        if attn.residual_connection:
            unsupported.append("residual_connection")
        if unsupported or attn.to_k.in_features != token_dim or attn.inner_dim != inner_dim:
            raise ValueError(
                f"{name} does not fit the DEADiff weights (SD1.x cross-attention: {token_dim}-wide text, "
                f"{inner_dim} inner features, no extra norms); it has {attn.to_k.in_features}-wide text, "
                f"{attn.inner_dim} inner features{', ' + ', '.join(unsupported) if unsupported else ''}."
            )
    return [attn for _, attn in layers]
