"""Which UNets the control module can steer, and the layout it copies from one (channels, blocks, heads...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import UNet2DConditionModel

# UNet features the forward pass reproduces. Anything else (class or added embeddings, other block types...) would
# be silently ignored by the two-stream forward, so such UNets are refused up front.
_SUPPORTED_DOWN_BLOCKS = {"CrossAttnDownBlock2D", "DownBlock2D"}
_SUPPORTED_UP_BLOCKS = {"CrossAttnUpBlock2D", "UpBlock2D"}
_REQUIRED_UNET_SETTINGS: dict[str, Any] = {
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "class_embed_type": None,
    "addition_embed_type": None,
    "encoder_hid_dim_type": None,  # "ip_image_proj" (an IP-Adapter) is allowed too: see _ALSO_ALLOWED
    "time_embedding_type": "positional",
    "time_embedding_act_fn": None,
    "resnet_time_scale_shift": "default",
    "center_input_sample": False,
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "attention_type": "default",
    "reverse_transformer_layers_per_block": None,
}


# An IP-Adapter's image projection only feeds the attention processors, which the two-stream forward passes through
# (`UNet2DConditionModel.process_encoder_hidden_states`), so a UNet with one loaded is still reproduced exactly.
_ALSO_ALLOWED: dict[str, set[Any]] = {"encoder_hid_dim_type": {"ip_image_proj"}}


def _per_block(value: Any, count: int, name: str) -> list[Any]:
    values = list(value) if isinstance(value, list | tuple) else [value] * count
    if len(values) != count:
        raise ValueError(f"The UNet config's `{name}` must have one value per block ({count}), got {len(values)}.")
    return values


def unet_layout(unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """The control module's config for a UNet config; refuses UNets whose forward pass it cannot reproduce."""
    config = dict(unet_config)
    for key, required in _REQUIRED_UNET_SETTINGS.items():
        value = config.get(key, required)
        if key == "mid_block_type" and value is None:
            value = required  # diffusers' default
        if value != required and value not in _ALSO_ALLOWED.get(key, set()):
            raise ValueError(f"Unsupported UNet: `{key}` is {value!r}; the style control module needs {required!r}.")
    down_types, up_types = list(config["down_block_types"]), list(config["up_block_types"])
    if not set(down_types) <= _SUPPORTED_DOWN_BLOCKS or not set(up_types) <= _SUPPORTED_UP_BLOCKS:
        raise ValueError(f"Unsupported UNet block types: {down_types} / {up_types}.")
    channels = list(config["block_out_channels"])
    count = len(channels)
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)  # diffusers' legacy naming
    return {
        "block_out_channels": channels,
        "layers_per_block": _per_block(config.get("layers_per_block", 2), count, "layers_per_block"),
        "up_block_types": up_types,
        "num_attention_heads": _per_block(heads, count, "attention_head_dim"),
        "cross_attention_dim": _per_block(config.get("cross_attention_dim", 1280), count, "cross_attention_dim"),
        "transformer_layers_per_block": _per_block(
            config.get("transformer_layers_per_block", 1), count, "transformer_layers_per_block"
        ),
        "time_embed_dim": config.get("time_embedding_dim") or channels[0] * 4,
        "norm_num_groups": config.get("norm_num_groups", 32),
        "norm_eps": config.get("norm_eps", 1e-5),
        "act_fn": config.get("act_fn", "silu"),
        "upcast_attention": bool(config.get("upcast_attention", False)),
        "mid_block_scale_factor": config.get("mid_block_scale_factor", 1.0),
        "downsample_padding": config.get("downsample_padding", 1),
    }


def check_unet_layout(unet: UNet2DConditionModel, config: Mapping[str, Any]) -> None:
    layout = unet_layout(unet.config)
    mismatched = [key for key, value in layout.items() if list(as_list(config[key])) != list(as_list(value))]
    if mismatched:
        raise ValueError(
            f"`unet` does not match the layout this control module was built for (differs in: {', '.join(mismatched)})."
        )


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
