"""The demo model's DEADiff: DEADiff's layout at toy size on the demo UNet, random weights from a fixed seed.

Its pictures mean nothing, like the rest of version 0; it exists so that the deadiff mode's code paths (style image
-> tokens -> processors, metadata, repaint) run offline. It holds none of DEADiff's weights, so the licence setting
does not apply to it.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from stylecodes.models.deadiff.attention import cross_attentions
from stylecodes.models.deadiff.model import DEADiffModel

DEMO_DEADIFF_SEED = 20240403
# The demo UNet has cross-attention in two levels (11 layers): its coarse ones, as DEADiff's content layers are on
# SD1.5, are the lower level's down block, the mid block and the first two of the first up block with attention.
DEMO_CONTENT_LAYERS = (2, 3, 4, 5, 6)


def build_demo_deadiff(unet: UNet2DConditionModel) -> DEADiffModel:
    """A DEADiffModel for the demo `unet`, identical on every call and machine (global RNG untouched)."""
    width = unet.config.cross_attention_dim
    encoder = {
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        "qformer_config": {"hidden_size": width, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 2 * width, "encoder_hidden_size": 32},
        "proj_hidden_size": 2 * width,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_DEADIFF_SEED)
        model = DEADiffModel(
            encoder_config=encoder,
            inner_dims=[attn.inner_dim for _, attn in cross_attentions(unet)],
            content_layers=DEMO_CONTENT_LAYERS,
        )
        with torch.no_grad():  # query tokens and the text constant start at zero; give them values
            model.style_encoder.query_tokens.normal_(std=0.5)
            model.style_encoder.condition_embeds.normal_(std=0.5)
    return model.eval().requires_grad_(False)
