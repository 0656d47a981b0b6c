"""`DEADiffModel`: everything DEADiff adds to a frozen SD1.x UNet, in one module, loadable from one file.

    model = DEADiffModel.from_file("deadiff_v1.safetensors")       # made by `stylecodes convert-deadiff`
    tokens = model.style_encoder.encode([image])                      # (1, 16, 768), once per style image
    conditioning = model.conditioning(tokens_per_row, weights, rows)  # once per generation
    with model.applied(unet, conditioning):                            # DEADiff's processors on every attn2
        noise = unet(latents, t, text).sample

The file's metadata holds the configuration, so no other setting is needed to build the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from stylecodes.checkpoint import check_state_dict
from stylecodes.models.deadiff.attention import (
    CONTENT_LAYERS,
    DEADiffAttnProcessor,
    DEADiffConditioning,
    ImageKeyValue,
    check_cross_attentions,
)
from stylecodes.models.deadiff.files import CONFIG_METADATA_KEY, read_converted
from stylecodes.models.deadiff.style_encoder import DEADiffStyleEncoder

SD15_INNER_DIMS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]


class DEADiffModel(ModelMixin, ConfigMixin):
    """The style encoder (CLIP tower, style Q-Former, projection) and the style layers' image projections.

    `style_encoder` stays in float32 whatever the model is cast to (it runs once per style image); the image
    projections take the UNet's dtype.
    """

    @register_to_config
    def __init__(
        self,
        encoder_config: dict[str, Any] | None = None,
        inner_dims: Sequence[int] = tuple(SD15_INNER_DIMS),  # per cross-attention layer, in DEADiff's order
        content_layers: Sequence[int] = CONTENT_LAYERS,
    ) -> None:
        super().__init__()
        from stylecodes.models.precision import keep_float32

        self.style_encoder = keep_float32(DEADiffStyleEncoder(**(encoder_config or {})))
        token_dim = self.style_encoder.token_dim
        unknown = sorted(set(content_layers) - set(range(len(inner_dims))))
        if unknown:
            raise ValueError(f"`content_layers` {unknown} are not among the {len(inner_dims)} attention layers.")
        self.image_kv = nn.ModuleDict(
            {str(i): ImageKeyValue(token_dim, dim) for i, dim in enumerate(inner_dims) if i not in content_layers}
        )
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        """The image projections' dtype (the UNet's); the style encoder's is always float32."""
        return next(iter(self.image_kv.values())).to_k.weight.dtype

    # ---------------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_file(cls, path: str | Path) -> DEADiffModel:
        """Load a converted `.safetensors` file (config in its metadata), with strict key and shape checks."""
        config, state_dict = read_converted(Path(path))
        with torch.device("meta"):
            model = cls(**config)

        check_state_dict(model, state_dict, source=str(path))
        model.load_state_dict(state_dict, strict=True, assign=True)
        _materialise_position_ids(model)
        model.style_encoder.float()  # (the released CLIP tower is stored in float16)
        return model.eval().requires_grad_(False)

    def save_file(self, path: str | Path) -> Path:
        """Write the weights and config in the converter's format (what `from_file` reads)."""
        from safetensors.torch import save_file

        config = {key: self.config[key] for key in ("encoder_config", "inner_dims", "content_layers")}
        metadata = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(config, sort_keys=True, default=list)}
        state_dict = {key: value.contiguous() for key, value in self.state_dict().items()}
        save_file(state_dict, str(path), metadata=metadata)
        return Path(path)

    # -------------------------------------------------------------------------------------------- conditioning

    def conditioning(self, tokens: Tensor, weight: Tensor | float, rows: Tensor | None = None) -> DEADiffConditioning:
        """One generation's conditioning for every step: `tokens` (B, 16, C), one row per UNet row (zeros for rows
        DEADiff gives no image), `weight` a float or (B,) img_weight per row, `rows` a (B,) bool mask of the rows
        that use DEADiff at all (None: all of them). Tensors go to the image projections' device and dtype."""
        expected = (self.style_encoder.num_tokens, self.style_encoder.token_dim)
        if not isinstance(tokens, Tensor) or tokens.ndim != 3 or tuple(tokens.shape[1:]) != expected:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"`tokens` must be a (batch, {expected[0]}, {expected[1]}) tensor, got {shape}.")
        batch = tokens.shape[0]
        device = next(iter(self.image_kv.values())).to_k.weight.device
        weight = torch.as_tensor(weight, dtype=self.dtype).to(device)
        if weight.ndim == 0:
            weight = weight.expand(batch)
        if tuple(weight.shape) != (batch,):
            shape = tuple(weight.shape)
            raise ValueError(f"`weight` must be a float or a ({batch},) tensor, one per row, got shape {shape}.")
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.bool)
            if tuple(rows.shape) != (batch,):
                raise ValueError(f"`rows` must be a ({batch},) bool tensor, got shape {tuple(rows.shape)}.")
            rows = None if bool(rows.all()) else rows.to(device)
        return DEADiffConditioning(tokens.to(device, self.dtype), weight.view(batch, 1, 1), rows)

    @contextmanager
    def applied(self, unet: UNet2DConditionModel, conditioning: DEADiffConditioning) -> Iterator[None]:
        """DEADiff's processors on every cross-attention of `unet` inside the block; the previous ones after it."""
        restore = self.install(unet, conditioning)
        try:
            yield
        finally:
            restore()

    def install(self, unet: UNet2DConditionModel, conditioning: DEADiffConditioning):
        """Put DEADiff's processors on `unet`'s cross-attentions; returns the function that puts the old ones back."""
        layers = check_cross_attentions(unet, list(self.config.inner_dims), self.style_encoder.token_dim)
        previous = [attn.processor for attn in layers]
        for index, attn in enumerate(layers):
            attn.set_processor(DEADiffAttnProcessor(self.image_kv[str(index)] if str(index) in self.image_kv else None,
                                                    conditioning))

        def restore() -> None:
            for attn, processor in zip(layers, previous, strict=True):
                attn.set_processor(processor)

        return restore


def _materialise_position_ids(model: nn.Module) -> None:
    """Built on the meta device, the model's non-persistent buffers (transformers' `position_ids`, 0..n-1) are not
    in the file: make them real."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if not buffer.is_meta:
                continue
            if name != "position_ids":
                raise RuntimeError(f"{type(module).__name__}.{name} has no value after loading")
            module.register_buffer(name, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
