"""Version 0, the demo model: every component of the real model at toy size, trained on procedural styles.

Its weights ship inside the package (`stylecodes/demo/weights/`, a model-version folder of about 19 MB) and load
through the same code as any trained version, so tests, CI and anyone trying the tool offline run the whole path
(encode an image, paint with the code) end to end with no download. It was trained on 64 px procedural pictures
(palettes, stripes, checks, dots, rings, gradients, noise; shapes described by prompts) by `python -m
stylecodes.demo.recipe`, base model included: its images follow the code's palette and pattern, nothing more.

The layout mirrors the real one so that the same code paths run: an SD1.5-shaped UNet (four levels, two resnets
per level, cross-attention in the middle levels) at widths 32/32/64/64, a 4-level VAE (8x downsampling, 4 latent
channels), a 2-layer CLIP text encoder with a character-level tokenizer, and a 2-layer SigLIP vision tower with
SigLIP-base's 224 px / 16 px patches (196 tokens).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, SiglipVisionConfig, SiglipVisionModel

from stylecodes.models.control import StyleCodesControlModel

DEMO_SEED = 20241111  # fixed: the demo model must be the same everywhere, so its codes mean the same everywhere
TEXT_WIDTH = 32  # text encoder hidden size = UNet cross-attention width
SIGLIP_WIDTH = 48  # stand-in for SigLIP-base's 768
MAX_PROMPT_TOKENS = 77  # as SD1.5's CLIP text encoder
DEMO_UNET_CONFIG = {
    "sample_size": 8,  # 64 px: the demo's natural size (any multiple of 8 works)
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 2,
    # SD1.5 has cross-attention in its first three levels; the demo drops it at full latent resolution, where
    # self-attention over (H/8 * W/8) tokens made a 512 px demo image ten times slower.
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": TEXT_WIDTH,
    "attention_head_dim": 8,
    # 8 groups, not SD1.5's 32: at the demo's natural size the mid block is 1x1, where 32 groups of 2 channels
    # normalise each pair to +-1 and the control stream lost every difference between styles (measured).
    "norm_num_groups": 8,
}
DEMO_VAE_CONFIG = {
    "block_out_channels": (8, 16, 16, 16),  # 4 levels: 8x downsampling like SD1.5's VAE
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
DEMO_AUTOENCODER_CONFIG = {"autoencoder_input_dim": SIGLIP_WIDTH, "d_model": 32, "num_heads": 4}

# Printable ASCII; each character is one token (alone or ending a word). Other characters are unknown tokens.
_CHARACTERS = [chr(code) for code in range(33, 127)]
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class DemoComponents:
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    control_model: StyleCodesControlModel
    image_encoder: SiglipVisionModel


def build_demo_components() -> DemoComponents:
    """The trained demo model's components in fp32 on the CPU, loaded from the package's version folder."""
    from stylecodes.loaders import load_model
    from stylecodes.versions import DEMO_VERSION, get_spec

    pipeline = load_model(get_spec(DEMO_VERSION)).pipeline
    return DemoComponents(
        pipeline.vae, pipeline.text_encoder, pipeline.tokenizer, pipeline.unet, pipeline.control_model,
        pipeline.image_encoder,
    )


def build_demo_architecture(seed: int = DEMO_SEED) -> DemoComponents:
    """The demo's components with freshly initialised (untrained) weights: what the recipe starts from.

    Identical on every call and machine for the same `seed` (the global RNG is left untouched). The control module
    keeps `from_unet`'s initialisation; `stylecodes.training` re-initialises its new layers as the paper does.
    """
    tokenizer = build_demo_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**DEMO_UNET_CONFIG)
        vae = AutoencoderKL(**DEMO_VAE_CONFIG)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_WIDTH,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=MAX_PROMPT_TOKENS,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        image_encoder = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=SIGLIP_WIDTH,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=224,
                patch_size=16,
            )
        )
        control_model = StyleCodesControlModel.from_unet(unet, **DEMO_AUTOENCODER_CONFIG)
    for module in (unet, vae, text_encoder, image_encoder, control_model):
        module.eval().requires_grad_(False)
    return DemoComponents(vae, text_encoder, tokenizer, unet, control_model, image_encoder)


def build_demo_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP tokenizer whose files are written here (no download)."""
    vocab: dict[str, int] = {}
    for token in [*_CHARACTERS, *(character + "</w>" for character in _CHARACTERS), _BOS, _EOS]:
        vocab[token] = len(vocab)
    with tempfile.TemporaryDirectory(prefix="stylecodes-demo-tokenizer-") as folder:
        vocab_file, merges_file = Path(folder, "vocab.json"), Path(folder, "merges.txt")
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n")  # no merges: every character stays its own token
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            bos_token=_BOS,
            eos_token=_EOS,
            unk_token=_EOS,
            pad_token=_EOS,
            model_max_length=MAX_PROMPT_TOKENS,
        )
