"""DEADiff's style extractor: a reference image -> 16 style tokens for the UNet's style layers.

The path of DEADiff's released inference (`DualBlipDiffusion.get_learned_conditioning` with the subject text
"style", the Gradio app's default):

1. the picture, resized to 224x224 with PIL's bicubic filter (no crop: the app squashes it), scaled to [0, 1] and
   normalised with CLIP's mean and std;
2. CLIP ViT-L/14's vision tower without its last layer and without a final norm (LAVIS's `clip_L`, 23 of the 24
   layers), then a LayerNorm (`ln_vision`): (B, 257, 1024);
3. the style BLIP-2 Q-Former: 16 learned query tokens followed by the text "[CLS] style [SEP]" in one sequence;
   the queries cross-attend to the image features in every layer, the text only takes part in self-attention; the
   queries' outputs are kept: (B, 16, 768);
4. a residual MLP (`ProjLayer`: LayerNorm, Linear, QuickGELU, Linear, plus the un-normalised input): (B, 16, 768).

The text is the same for every image, so its word and position embeddings are stored as one constant
(`condition_embeds`) instead of a 30k-word embedding table and a tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import Tensor, nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel, CLIPVisionConfig, CLIPVisionModel

from stylecodes.images import to_rgb

CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# DEADiff's sizes (configs/inference_deadiff_512x512.yaml, LAVIS's clip_L and bert-base-uncased); the converter
# reads the widths and depths from the checkpoint and takes the head counts from here.
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
    "image_size": CLIP_IMAGE_SIZE, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}
QFORMER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "encoder_hidden_size": 1024, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
}


class StyleProjection(nn.Module):
    """DEADiff's `ProjLayer`: x + Linear(QuickGELU(Linear(LayerNorm(x)))) (its dropout is inactive at inference)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.dense1 = nn.Linear(width, hidden)
        self.dense2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.dense1(self.norm(x))
        hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU
        return x + self.dense2(hidden)


class DEADiffStyleEncoder(ModelMixin, ConfigMixin):
    """CLIP ViT-L (23 layers) + LayerNorm + style Q-Former + projection: (B, 3, 224, 224) -> (B, 16, 768)."""

    @register_to_config
    def __init__(
        self,
        vision_config: Mapping[str, Any] | None = None,
        qformer_config: Mapping[str, Any] | None = None,
        num_query_tokens: int = 16,
        condition_length: int = 3,  # "[CLS] style [SEP]"
        proj_hidden_size: int = 3072,
    ) -> None:
        super().__init__()
        vision = CLIPVisionModel(CLIPVisionConfig(**{**VISION_DEFAULTS, **(vision_config or {})}))
        self.vision = getattr(vision, "vision_model", vision)  # transformers 4 nests the tower, 5 does not
        self.vision.post_layernorm = nn.Identity()  # LAVIS's clip_L has no final norm; ln_vision follows instead
        width = self.vision.config.hidden_size
        self.ln_vision = nn.LayerNorm(width)
        qformer = {**QFORMER_DEFAULTS, **(qformer_config or {})}
        self.qformer = Blip2QFormerModel(
            Blip2QFormerConfig(**qformer, cross_attention_frequency=1, use_qformer_text_input=True)
        )
        hidden = qformer["hidden_size"]
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_tokens, hidden))
        self.condition_embeds = nn.Parameter(torch.zeros(1, condition_length, hidden))
        self.proj = StyleProjection(hidden, proj_hidden_size)
        self.eval()

    @property
    def num_tokens(self) -> int:
        return self.config.num_query_tokens

    @property
    def token_dim(self) -> int:
        return self.query_tokens.shape[-1]

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, 224, 224) CLIP-normalised pixels -> (B, 16, 768) style tokens."""
        image = self.vision(pixel_values=pixel_values).last_hidden_state  # (B, 257, 1024), no final norm
        image = self.ln_vision(image)
        batch = image.shape[0]
        sequence = torch.cat(
            [self.query_tokens.expand(batch, -1, -1), self.condition_embeds.expand(batch, -1, -1)], dim=1
        )  # (B, 16 + 3, 768)
        output = self.qformer(
            query_embeds=sequence, query_length=self.num_tokens, encoder_hidden_states=image
        ).last_hidden_state
        return self.proj(output[:, : self.num_tokens])  # (B, 16, 768)

    def pixel_values(self, images: Sequence[Image.Image]) -> Tensor:
        """DEADiff's preprocessing -> (B, 3, 224, 224) float32 on the CPU."""
        if not images:
            raise ValueError("`images` is empty; pass at least one style image.")
        bad = [type(image).__name__ for image in images if not isinstance(image, Image.Image)]
        if bad:
            raise ValueError(f"`images` must be PIL images (use stylecodes.images.load_image), got {bad[0]}.")
        size = (CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE)
        resized = [to_rgb(image).resize(size, Image.Resampling.BICUBIC) for image in images]
        arrays = [np.asarray(image, dtype=np.float32) for image in resized]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255  # (B, 3, 224, 224) in [0, 1]
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (pixels - mean) / std

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images -> (B, 16, 768) float32 style tokens on the CPU."""
        pixels = self.pixel_values(images).to(self.device, self.dtype)
        return self(pixels).float().cpu()
