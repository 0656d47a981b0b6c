"""The Stable Diffusion 1.5 UNet layout that the published StyleCodes checkpoint was built against.

This is `unet/config.json` of `runwayml/stable-diffusion-v1-5` (now `stable-diffusion-v1-5/stable-diffusion-v1-5`),
with only the fields that differ from diffusers' defaults or that the control module reads. Keeping it here lets the
control module be built (for example on the meta device, to check checkpoint keys) without downloading anything.
"""

from __future__ import annotations

from typing import Any

SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,  # 512 px / VAE factor 8
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,  # CLIP ViT-L/14 text hidden size
    "attention_head_dim": 8,  # diffusers' legacy name: SD1.5 has 8 heads per attention layer
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
}
