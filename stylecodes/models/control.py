"""The StyleCodes control module: a ControlNet-XS-like second stream that steers a frozen SD1.5 UNet.

Forward pass of the published release (see tests/data/reference/README.md):

1. The base UNet's time embedding, down path and skip connections run unchanged.
2. The control stream starts from the style map that the autoencoder decodes from the style latent, at the
   mid-block resolution (`decode_style`, once per generation).
3. At the mid block and after every up sub-block (resnet [+ attention] [+ upsampler]), both streams run their own
   copy of the block, then a "collaboration" linear mixes the channel-concatenation [control, base] per position;
   its second half replaces the base stream by `base * (1 - scale) + mixed_base * scale`.
4. The control up blocks see zeros where the base blocks see the down path's skip connections. Both streams use
   the base's time embedding and the same text embeddings. The base's output head finishes.

Module and parameter names follow the published checkpoint, so its weights load with strict key checking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import get_mid_block, get_up_block
from torch import Tensor, nn

from stylecodes.models.autoencoder import StyleAutoencoder
from stylecodes.models.precision import keep_float32
from stylecodes.models.unet_layout import as_list, check_unet_layout, unet_layout
from stylecodes.models.zero_skip import resnet_on_zero_skip

DEFAULT_CONDITIONING_SCALE = 0.9  # the published pipeline's

# The autoencoder's settings in the control module's config -> StyleAutoencoder's names. Its input width is renamed
# (beside the UNet's settings a bare `input_dim` would be ambiguous); its output width is the mid block's.
AUTOENCODER_SETTINGS: dict[str, str] = {
    "autoencoder_input_dim": "input_dim",
    "d_model": "d_model",
    "num_heads": "num_heads",
    "num_layers": "num_layers",
    "latent_dim": "latent_dim",
    "decoder_layers": "decoder_layers",
    "max_len": "max_len",
}


@dataclass(frozen=True)
class PreparedStyle:
    """A batch's styles in the form every denoising step uses; `StyleCodesControlModel.prepare_style` builds it.

    Only the styled rows (scale != 0) are kept. Finding them means reading the scales back from the device, which
    on a GPU waits for all queued work, so it is done once per generation here instead of at every step.
    """

    style_map: Tensor  # (n, C_mid, h, w): the styled rows' maps, n = number of styled samples
    scale: Tensor  # (n, 1, 1): their conditioning scales, shaped for the blend
    rows: Tensor | None  # (n,) their indices in the batch, on the maps' device; None when every row is styled
    batch_size: int  # B: the batch the rows index into


class _ControlStream(nn.Module):
    """Container whose attribute names give the checkpoint's `control_model.*` keys."""

    def __init__(self, mid_block: nn.Module, up_blocks: nn.ModuleList, up_zero_convs_out: nn.ModuleList) -> None:
        super().__init__()
        self.mid_block = mid_block
        self.up_blocks = up_blocks
        self.up_zero_convs_out = up_zero_convs_out  # one collaboration linear per up sub-block


class StyleCodesControlModel(ModelMixin, ConfigMixin):
    """Style autoencoder plus a full-width copy of the UNet's mid and up blocks, joined to the base by linears.

    Build it with `from_unet` (or `from_unet_config`); the config records the UNet layout it was built for. The
    autoencoder stays in float32 whatever dtype the rest is cast to (it encodes images: see `keep_float32`); `dtype`
    is the control stream's.
    """

    _supports_gradient_checkpointing = True  # training: `enable_gradient_checkpointing()` (per up sub-block)

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: tuple[int, ...] = (2, 2, 2, 2),
        up_block_types: tuple[str, ...] = ("UpBlock2D", *("CrossAttnUpBlock2D",) * 3),
        num_attention_heads: tuple[int, ...] = (8, 8, 8, 8),
        cross_attention_dim: tuple[int, ...] = (768, 768, 768, 768),
        transformer_layers_per_block: tuple[int, ...] = (1, 1, 1, 1),
        time_embed_dim: int = 1280,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        act_fn: str = "silu",
        upcast_attention: bool = False,
        mid_block_scale_factor: float = 1.0,
        downsample_padding: int = 1,
        autoencoder_input_dim: int = 768,
        d_model: int = 512,
        num_heads: int = 4,
        num_layers: int = 3,
        latent_dim: int = 20,
        decoder_layers: int = 2,
        max_len: int = 5000,
    ) -> None:
        settings = dict(locals())  # the autoencoder's settings, by their names in this signature
        super().__init__()
        self.gradient_checkpointing = False
        self.sref_autoencoder = StyleAutoencoder(
            output_dim=block_out_channels[-1],
            **{inner: settings[outer] for outer, inner in AUTOENCODER_SETTINGS.items()},
        )
        keep_float32(self.sref_autoencoder)
        mid_block = get_mid_block(
            "UNetMidBlock2DCrossAttn",
            temb_channels=time_embed_dim,
            in_channels=block_out_channels[-1],
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            resnet_groups=norm_num_groups,
            output_scale_factor=mid_block_scale_factor,
            transformer_layers_per_block=transformer_layers_per_block[-1],
            num_attention_heads=num_attention_heads[-1],
            cross_attention_dim=cross_attention_dim[-1],
            use_linear_projection=True,  # the release's control blocks use linear (not 1x1 conv) projections
            upcast_attention=upcast_attention,
        )
        up_blocks, collaboration = nn.ModuleList(), nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        output_channels = reversed_channels[0]
        for i, up_block_type in enumerate(up_block_types):
            # Same channel bookkeeping as UNet2DConditionModel, so each control block mirrors its base block.
            previous_channels, output_channels = output_channels, reversed_channels[i]
            input_channels = reversed_channels[min(i + 1, len(reversed_channels) - 1)]
            num_resnets = list(reversed(layers_per_block))[i] + 1
            up_blocks.append(
                get_up_block(
                    up_block_type,
                    num_layers=num_resnets,
                    transformer_layers_per_block=list(reversed(transformer_layers_per_block))[i],
                    in_channels=input_channels,
                    out_channels=output_channels,
                    prev_output_channel=previous_channels,
                    temb_channels=time_embed_dim,
                    add_upsample=i < len(up_block_types) - 1,
                    resnet_eps=norm_eps,
                    resnet_act_fn=act_fn,
                    resolution_idx=i,
                    resnet_groups=norm_num_groups,
                    cross_attention_dim=list(reversed(cross_attention_dim))[i],
                    num_attention_heads=list(reversed(num_attention_heads))[i],
                    use_linear_projection=True,
                    upcast_attention=upcast_attention,
                    attention_head_dim=output_channels // list(reversed(num_attention_heads))[i],
                )
            )
            collaboration.extend(_collaboration_linear(2 * output_channels) for _ in range(num_resnets))
        self.control_model = _ControlStream(mid_block, up_blocks, collaboration)
        self.middle_block_out = _collaboration_linear(2 * block_out_channels[-1])
        self.eval()  # inference-only, like the autoencoder

    # ----------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, **autoencoder_config: Any) -> StyleCodesControlModel:
        """A randomly initialised control module for `unet`, on the UNet's device and dtype.

        `autoencoder_config` takes the `AUTOENCODER_SETTINGS` (defaults: the published SD1.5 release).
        """
        if not isinstance(unet, UNet2DConditionModel):
            raise TypeError(f"`unet` must be a diffusers UNet2DConditionModel, got {type(unet).__name__}.")
        model = cls.from_unet_config(unet.config, **autoencoder_config).to(unet.device)
        return model if model.dtype == unet.dtype else model.to(dtype=unet.dtype)

    @classmethod
    def from_unet_config(cls, unet_config: Mapping[str, Any], **autoencoder_config: Any) -> StyleCodesControlModel:
        """Build from a UNet config alone (e.g. `SD15_UNET_CONFIG` under `torch.device("meta")`)."""
        config = unet_layout(unet_config)
        unknown = set(autoencoder_config) - set(AUTOENCODER_SETTINGS)
        if unknown:
            raise TypeError(f"Unknown autoencoder settings: {', '.join(sorted(unknown))}.")
        return cls(**config, **autoencoder_config)

    # ---------------------------------------------------------------------------------------------------- style map

    @property
    def autoencoder(self) -> StyleAutoencoder:
        return self.sref_autoencoder

    @property
    def dtype(self) -> torch.dtype:
        """The control stream's dtype (the UNet's); the autoencoder's is always float32."""
        return self.middle_block_out.weight.dtype

    def mid_block_size(self, sample_height: int, sample_width: int) -> tuple[int, int]:
        """Spatial size of the UNet's mid block for a latent sample of the given size."""
        if sample_height < 1 or sample_width < 1:
            raise ValueError(
                f"`sample_height` and `sample_width` (latent rows and columns, pixels / 8) must be positive, "
                f"got {sample_height} x {sample_width}."
            )
        padding = self.config.downsample_padding
        height, width = sample_height, sample_width
        for _ in range(len(self.config.block_out_channels) - 1):  # every down block but the last downsamples
            height = (height + 2 * padding - 3) // 2 + 1
            width = (width + 2 * padding - 3) // 2 + 1
        return height, width

    def decode_style(self, latent: Tensor, sample_height: int, sample_width: int) -> Tensor:
        """(B, 20) dequantised style latent -> (B, C_mid, h, w) style map, in the control stream's dtype, for latent
        samples of the given size.

        Depends only on the latent and the sample size: compute it once per generation, not once per step. Decoded
        in float32 like the encoding, so a code's map is the same whatever the pipeline's dtype, up to the final cast.
        """
        self.sref_autoencoder.check_latent(latent)  # before `.to`: a numpy array gets this message, not AttributeError
        height, width = self.mid_block_size(sample_height, sample_width)
        latent = latent.to(device=self.device, dtype=self.sref_autoencoder.dtype)
        return self.sref_autoencoder.decode(latent, height, width).to(self.dtype)

    def prepare_style(
        self, style_map: Tensor, conditioning_scale: float | Tensor = DEFAULT_CONDITIONING_SCALE
    ) -> PreparedStyle | None:
        """`decode_style`'s (B, C_mid, h, w) maps and a float or (B,) scale -> what every `forward` step needs.

        Returns None when no row is styled (every scale 0): the steps are then the plain UNet. Call it once per
        generation and pass the result to each step as `style_map`; only this call reads scales back to the host.
        """
        channels = self.config.block_out_channels[-1]
        if not isinstance(style_map, Tensor) or style_map.ndim != 4 or style_map.shape[1] != channels:
            raise ValueError(
                f"`style_map` must be a (batch, {channels}, height, width) tensor from `decode_style`, "
                f"got {_shape(style_map)}."
            )
        batch = style_map.shape[0]
        if isinstance(conditioning_scale, Tensor):
            scales = conditioning_scale.detach().to("cpu", torch.float64)  # the one read-back from the device
            if scales.ndim == 0:
                scales = scales.expand(batch)
            if tuple(scales.shape) != (batch,):
                raise ValueError(
                    f"`conditioning_scale` must be a float or a ({batch},) tensor, one per sample, "
                    f"got shape {tuple(scales.shape)}."
                )
        elif isinstance(conditioning_scale, int | float) and not isinstance(conditioning_scale, bool):
            scales = torch.full((batch,), float(conditioning_scale), dtype=torch.float64)
        else:
            raise ValueError(
                f"`conditioning_scale` must be a float or a tensor, got {type(conditioning_scale).__name__}."
            )
        if not bool(torch.isfinite(scales).all()):  # on the CPU copy: no device sync
            raise ValueError("`conditioning_scale` must be finite.")
        styled = scales.nonzero()[:, 0]  # (n,) on the CPU
        if len(styled) == 0:
            return None
        rows = None if len(styled) == batch else styled.to(style_map.device)
        return PreparedStyle(
            style_map=style_map if rows is None else style_map.index_select(0, rows),
            scale=scales[styled].to(device=style_map.device, dtype=style_map.dtype).view(-1, 1, 1),
            rows=rows,
            batch_size=batch,
        )

    # ------------------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        unet: UNet2DConditionModel,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        style_map: Tensor | PreparedStyle | None,
        conditioning_scale: float | Tensor | None = None,
        *,
        added_cond_kwargs: dict[str, Any] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> Tensor:
        """Noise prediction of `unet` steered by the style maps; same shape as `sample` (B, 4, H, W).

        `style_map` is either `decode_style`'s output, one row per sample, with `conditioning_scale` a float or a
        (B,) tensor (default 0.9), or `prepare_style(style_map, conditioning_scale)`'s result with no
        `conditioning_scale` here: the same output, without reading the scales back from the device at every step
        (what the pipeline does). None: the plain UNet. Samples with scale 0 get exactly the plain UNet output and
        their style_map rows are ignored, so a batch can mix styled and unstyled samples.

        `added_cond_kwargs` and `cross_attention_kwargs` are the UNet's (e.g. an IP-Adapter's `image_embeds` and
        masks, from another style mode): they reach the base stream's blocks exactly as the UNet would pass them; the
        control stream's own blocks see the text alone.
        """
        _check_sample_and_text(unet, sample, encoder_hidden_states)
        unet_kwargs = {"added_cond_kwargs": added_cond_kwargs, "cross_attention_kwargs": cross_attention_kwargs}
        if style_map is None:
            return unet(sample, timestep, encoder_hidden_states, **unet_kwargs).sample
        if isinstance(style_map, PreparedStyle):
            if conditioning_scale is not None:
                raise ValueError(
                    "`conditioning_scale` must be None with a prepared style: the scales were given to "
                    "`prepare_style`, pass them there."
                )
            style: PreparedStyle | None = style_map
            self._check_style_fits(style_map.batch_size, style_map.style_map.shape[1:], sample)
        else:
            scale = DEFAULT_CONDITIONING_SCALE if conditioning_scale is None else conditioning_scale
            style = self.prepare_style(style_map, scale)
            self._check_style_fits(style_map.shape[0], style_map.shape[1:], sample)  # even if no row is styled
        if style is None:  # every scale is 0
            return unet(sample, timestep, encoder_hidden_states, **unet_kwargs).sample
        check_unet_layout(unet, self.config)
        rows = style.rows  # None: every row is styled (no gather/scatter needed)

        def styled_rows(tensor: Tensor) -> Tensor:
            return tensor if rows is None else tensor.index_select(0, rows)

        # 1. Time embedding and text states, shared by both streams; the base's may carry an adapter's image tokens.
        temb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))  # (B, 1280)
        ctrl_temb, ctrl_text = styled_rows(temb), styled_rows(encoder_hidden_states)  # (n, 77, 768)
        text = unet.process_encoder_hidden_states(encoder_hidden_states, added_cond_kwargs or {})  # (B, 77, 768)
        attention = {"cross_attention_kwargs": cross_attention_kwargs}

        # 2. Base down path, unchanged; keep its skip connections.
        h_base = unet.conv_in(sample)  # (B, 320, H, W)
        skips = [h_base]
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h_base, block_skips = block(hidden_states=h_base, temb=temb, encoder_hidden_states=text, **attention)
            else:
                h_base, block_skips = block(hidden_states=h_base, temb=temb)
            skips.extend(block_skips)

        # 3. Mid block: both streams, then the first collaboration.
        h_base = unet.mid_block(h_base, temb, encoder_hidden_states=text, **attention)  # (B, 1280, H/8, W/8)
        h_ctrl = style.style_map.to(sample.dtype)  # (n, 1280, H/8, W/8), n = styled samples
        h_ctrl = self.control_model.mid_block(h_ctrl, ctrl_temb, encoder_hidden_states=ctrl_text)
        h_ctrl, h_base = _collaborate(self.middle_block_out, h_ctrl, h_base, style)

        # 4. Up path, one sub-block at a time; the control stream sees zeros in place of the skips.
        need_upsample_size = any(size % 2 ** (len(unet.up_blocks) - 1) for size in sample.shape[-2:])
        collaboration = iter(self.control_model.up_zero_convs_out)
        for base_block, ctrl_block in zip(unet.up_blocks, self.control_model.up_blocks, strict=True):
            last = len(base_block.resnets) - 1
            for index in range(last + 1):
                skip = skips.pop()
                # Match the skip sizes when the sample is not a multiple of 8, as UNet2DConditionModel does.
                upsample_size = skips[-1].shape[2:] if index == last and skips and need_upsample_size else None
                blocks = (base_block, ctrl_block, index, next(collaboration), style, upsample_size, not skips)
                streams = (h_ctrl, h_base, skip, temb, text, ctrl_temb, ctrl_text, cross_attention_kwargs)
                if self.gradient_checkpointing and torch.is_grad_enabled():  # training: recompute in backward
                    h_ctrl, h_base = torch.utils.checkpoint.checkpoint(
                        _up_subblock, *blocks, *streams, use_reentrant=False
                    )
                else:
                    h_ctrl, h_base = _up_subblock(*blocks, *streams)

        # 5. The base's output head.
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(h_base)))  # (B, 4, H, W)

    def _check_style_fits(self, map_batch: int, map_shape: torch.Size, sample: Tensor) -> None:
        """The style maps (a batch of `map_batch` maps of `map_shape` each) must fit `sample`; no device work."""
        batch, _, height, width = sample.shape
        expected = (batch, self.config.block_out_channels[-1], *self.mid_block_size(height, width))
        actual = (map_batch, *map_shape)
        if actual != expected:
            raise ValueError(
                f"`style_map` must have shape {expected} (one `decode_style` row per sample, at the mid-block "
                f"resolution of a {height}x{width} sample), got {actual}."
            )


def _check_sample_and_text(unet: UNet2DConditionModel, sample: Tensor, encoder_hidden_states: Tensor) -> None:
    """`sample` and `encoder_hidden_states` must fit `unet`; shape checks only, as they run at every step."""
    channels = unet.config.in_channels
    if not isinstance(sample, Tensor) or sample.ndim != 4 or sample.shape[1] != channels:
        raise ValueError(
            f"`sample` must be a (batch, {channels}, height, width) tensor of latents (`unet` takes {channels} "
            f"channels), got {_shape(sample)}."
        )
    text_widths = set(as_list(unet.config.cross_attention_dim))
    if not isinstance(encoder_hidden_states, Tensor) or encoder_hidden_states.ndim != 3:
        raise ValueError(
            f"`encoder_hidden_states` must be (batch, tokens, features), got {_shape(encoder_hidden_states)}."
        )
    if encoder_hidden_states.shape[0] != sample.shape[0]:
        raise ValueError(
            f"`encoder_hidden_states` has batch {encoder_hidden_states.shape[0]} but `sample` has batch "
            f"{sample.shape[0]}."
        )
    if text_widths != {encoder_hidden_states.shape[2]}:
        raise ValueError(
            f"`encoder_hidden_states` must have {' or '.join(map(str, sorted(text_widths)))} features per token "
            f"(`unet`'s cross_attention_dim; the output of the text encoder that goes with this UNet), "
            f"got {encoder_hidden_states.shape[2]}."
        )


def _collaboration_linear(channels: int) -> nn.Linear:
    """A linear over [control, base] channels, initialised to the identity (streams pass through unchanged)."""
    linear = nn.Linear(channels, channels)
    if linear.weight.device.type != "meta":
        with torch.no_grad():
            linear.weight.copy_(torch.eye(channels))
            linear.bias.zero_()
    return linear


def _collaborate(
    linear: nn.Linear, h_ctrl: Tensor, h_base: Tensor, style: PreparedStyle, *, final: bool = False
) -> tuple[Tensor | None, Tensor]:
    """Mix the streams per position and blend the new base into `h_base` by each styled row's scale.

    The linear acts on [control, base] channels at every position. Written as batched matrix products on the
    (C, h*w) views of each stream, with the weight's quarters broadcast over the batch (stride 0, never copied), it
    needs no concatenation and no transposes, and the bias rides in the first product. The blend
    `base + s * (new_base - base)` takes each row's scale from a device tensor, so no step reads a scale back to the
    host. With `final`, the control half (which nothing would read) is skipped and None is returned for it.
    """
    rows = style.rows
    base = h_base if rows is None else h_base.index_select(0, rows)  # (n, C, h, w), styled rows only
    n, channels, height, width = h_ctrl.shape
    ctrl_flat = h_ctrl.reshape(n, channels, height * width)  # (n, C, h*w)
    base_flat = base.reshape(n, channels, height * width)

    def mix(out: slice) -> Tensor:  # W[out, :C] @ ctrl + W[out, C:] @ base + b[out], per sample: (n, C, h*w)
        weight = linear.weight[out]  # (C, 2C): [from ctrl | from base]
        mixed = torch.baddbmm(linear.bias[out, None], weight[:, :channels].expand(n, -1, -1), ctrl_flat)
        return torch.baddbmm(mixed, weight[:, channels:].expand(n, -1, -1), base_flat)

    new_base = torch.lerp(base_flat, mix(slice(channels, None)), style.scale.to(base.dtype)).view_as(base)
    new_ctrl = None if final else mix(slice(None, channels)).view_as(h_ctrl)
    return new_ctrl, new_base if rows is None else h_base.index_copy(0, rows, new_base)


def _up_subblock(
    base_block: nn.Module,
    ctrl_block: nn.Module,
    index: int,
    collaboration: nn.Linear,
    style: PreparedStyle,
    upsample_size: torch.Size | None,
    final: bool,
    h_ctrl: Tensor,
    h_base: Tensor,
    skip: Tensor,
    temb: Tensor,
    text: Tensor | tuple[Tensor, ...],
    ctrl_temb: Tensor,
    ctrl_text: Tensor,
    cross_attention_kwargs: dict[str, Any] | None,
) -> tuple[Tensor | None, Tensor]:
    """Resnet `index` of an up block (+ its attention and upsampler) in both streams, then their collaboration.

    After the last sub-block (`final`) only the base stream is still needed."""
    h_base = base_block.resnets[index](torch.cat([h_base, skip], 1), temb)
    h_base = _finish_up_subblock(base_block, index, h_base, text, upsample_size, cross_attention_kwargs)
    h_ctrl = resnet_on_zero_skip(ctrl_block.resnets[index], h_ctrl, skip.shape[1], ctrl_temb)
    h_ctrl = _finish_up_subblock(ctrl_block, index, h_ctrl, ctrl_text, upsample_size)
    return _collaborate(collaboration, h_ctrl, h_base, style, final=final)


def _finish_up_subblock(
    block: nn.Module,
    index: int,
    hidden: Tensor,
    text: Tensor | tuple[Tensor, ...],
    upsample_size: torch.Size | None,
    cross_attention_kwargs: dict[str, Any] | None = None,
) -> Tensor:
    """After resnet `index` of an up block: its attention if any, and the upsampler after the block's last resnet."""
    attentions = getattr(block, "attentions", None)
    if attentions:
        hidden = attentions[index](
            hidden, encoder_hidden_states=text, cross_attention_kwargs=cross_attention_kwargs, return_dict=False
        )[0]
    if index == len(block.resnets) - 1 and block.upsamplers:
        hidden = block.upsamplers[0](hidden, upsample_size)
    return hidden


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__
