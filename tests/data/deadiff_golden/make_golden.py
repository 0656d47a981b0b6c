"""Remake the DEADiff golden numbers by running the original code on tiny random weights.

    python3 make_golden.py --deadiff /path/to/bytedance/DEADiff --lavis /path/to/salesforce/LAVIS [--out DIR]

Run it in a scratch environment, never in the project's: the original needs `transformers==4.28.0`, `kornia==0.6.8`,
`einops==0.4.1`, `omegaconf` and `iopath` (README.md says how it was made). This file is ours; it imports DEADiff's
`ldm` code and LAVIS's BLIP-2 Q-Former from the two checkouts given on the command line and keeps only the numbers.
Nothing of theirs is copied into the project.

What runs is their code, with four substitutions, all outside the numbers:
- `xformers.ops.memory_efficient_attention` (DEADiff's only cross-attention class that takes image tokens needs it;
  xformers has no CPU build here) is the textbook softmax(QK^T / sqrt(d)) V it computes;
- LAVIS's Hub downloads (the bert-base-uncased tokenizer and config, the CLIP ViT-L weights) are replaced by tiny
  configurations: a 7-word BERT vocabulary, a 2-layer Q-Former, a 2-layer CLIP ViT at 224 px;
- the modules that LAVIS and ldm import only for downloads, training or other models (timm, fairscale,
  torchvision's download helpers, pytorch-lightning through `ldm.models.diffusion.ddpm`) are empty stand-ins;
- the SD text encoder is not DEADiff's: its output is a random input here.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeded import is_regenerated, seeded_tensor  # this folder's helper (the script runs from anywhere)

BATCH = 2  # two reference images, two prompts
TEXT_TOKENS = 20  # >= the 16 query tokens: DEADiff slices its "no image" zeros from the text embedding's shape
WIDTH = 32  # every hidden size of the tiny model (ldm's GroupNorm needs multiples of 32)
LATENT_SIZE = 16
IMAGE_SIZE = 56  # stored reference images; the app resizes them to 224 with PIL before the model sees them
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "style", "content"]
TIMESTEPS = [999, 411]
IMAGE_WEIGHTS = [1.0, 0.6]  # the app's "img_weight" slider: 1.0 is its default


def stub_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def package_without_init(name: str, folder: Path) -> None:
    """Make `name` importable as a package without running its __init__ (LAVIS's import every model and dataset)."""
    stub_module(name, __path__=[str(folder)])


def textbook_attention(q, k, v, attn_bias=None, op=None):
    assert attn_bias is None
    weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v


def import_original(deadiff: Path, lavis: Path):
    import transformers.modeling_utils  # noqa: F401 (before the stand-ins: it probes which packages exist)

    sys.path[:0] = [str(deadiff), str(lavis)]
    xformers = stub_module("xformers", __path__=[])
    xformers.ops = stub_module("xformers.ops", memory_efficient_attention=textbook_attention)
    for name in ("timm", "timm.models", "fairscale", "fairscale.nn", "fairscale.nn.checkpoint", "torchvision",
                 "torchvision.datasets"):
        stub_module(name, __path__=[])
    stub_module("timm.models.hub", download_cached_file=None)
    stub_module("timm.models.layers", drop_path=None, to_2tuple=None, trunc_normal_=None)
    stub_module("timm.models.registry", register_model=lambda fn: fn)
    stub_module("fairscale.nn.checkpoint.checkpoint_activations", checkpoint_wrapper=None)
    stub_module("torchvision.datasets.utils", check_integrity=None, download_file_from_google_drive=None,
                extract_archive=None)
    stub_module("ldm.models.diffusion.ddpm", LatentDiffusion=torch.nn.Module)
    for package in ("lavis", "lavis.common", "lavis.models", "lavis.models.blip2_models", "lavis.models.blip_models"):
        package_without_init(package, lavis / package.replace(".", "/"))

    import lavis.models.base_model as base_model
    import lavis.models.blip2_models.blip2 as blip2

    sys.modules["lavis.models"].BaseModel = base_model.BaseModel  # what LAVIS's model registry checks against
    from lavis.models.blip2_models.blip2_qformer import Blip2Qformer
    from lavis.models.clip_vit import VisionTransformer
    from ldm.models.diffusion.blip_diffusion import DualBlipDiffusion, ProjLayer
    from ldm.modules.diffusionmodules.openaimodel import HierarchicalUNetModel

    return blip2, Blip2Qformer, VisionTransformer, DualBlipDiffusion, ProjLayer, HierarchicalUNetModel


def tiny_blip(blip2, Blip2Qformer, VisionTransformer, vocab_file: Path):
    """LAVIS's Blip2Qformer with its Hub-loading constructors swapped for tiny ones (same classes)."""
    from transformers import BertConfig, BertTokenizer

    def tokenizer(cls, truncation_side="right"):
        tok = BertTokenizer(str(vocab_file), truncation_side=truncation_side)
        tok.add_special_tokens({"bos_token": "[DEC]"})
        return tok

    def vision(img_size=224, use_checkpoint=False, precision="fp16"):
        return VisionTransformer(input_resolution=img_size, patch_size=14, width=WIDTH, layers=2, heads=4,
                                 use_grad_checkpointing=False)

    def qformer(cls, num_query_token, vision_width, cross_attention_freq=2):
        config = BertConfig(vocab_size=len(VOCAB), hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=2 * WIDTH, max_position_embeddings=16)
        config.encoder_width = vision_width
        config.add_cross_attention = True
        config.cross_attention_freq = cross_attention_freq
        config.query_length = num_query_token
        model = blip2.BertLMHeadModel(config)
        query_tokens = torch.nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
        return model, query_tokens

    blip2.Blip2Base.init_tokenizer = classmethod(tokenizer)
    blip2.Blip2Base.init_Qformer = classmethod(qformer)
    blip2.create_clip_vit_L = vision
    # DEADiff's config: vit_model clip_L, 16 query tokens, a cross-attention in every layer
    return Blip2Qformer(vit_model="clip_L", num_query_token=16, cross_attention_freq=1)


def randomise(module: torch.nn.Module, prefix: str) -> None:
    """Every parameter from its checkpoint key's seed (zero-initialised outputs too, so that every path counts)."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(seeded_tensor(prefix + name, tuple(parameter.shape)))


def reference_images(generator: torch.Generator) -> np.ndarray:
    """(B, 56, 56, 3) uint8: smooth colour fields plus noise, different per image."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    noise = torch.rand((BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), generator=generator).numpy()
    images = []
    for i in range(BATCH):
        base = np.stack([np.sin(3 * x + i), np.cos(2 * y - i), np.sin(x * y * 7 + 2 * i)], -1) * 0.35 + 0.5
        images.append(np.clip(base + 0.15 * noise[i], 0, 1))
    return (np.stack(images) * 255).round().astype(np.uint8)


def app_input(images: np.ndarray) -> torch.Tensor:
    """scripts/app.py's preprocessing: PIL resize to 224 (bicubic), ToTensor, then 2 * (x - 0.5)."""
    tensors = []
    for image in images:
        resized = np.asarray(Image.fromarray(image).convert("RGB").resize((224, 224)), dtype=np.float32) / 255
        tensors.append(torch.from_numpy(resized).permute(2, 0, 1))
    return 2 * (torch.stack(tensors) - 0.5)


class FixedTextEncoder:
    """Stands in for ldm's FrozenCLIPEmbedder: the SD text encoder is shared with every mode, not DEADiff's."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table

    def encode(self, texts):
        return torch.stack([self.table[text] for text in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadiff", type=Path, required=True, help="a checkout of github.com/bytedance/DEADiff")
    parser.add_argument("--lavis", type=Path, required=True,
                        help="a checkout of github.com/salesforce/LAVIS at branch 20230801-blip-diffusion-edit")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    blip2, Blip2Qformer, VisionTransformer, DualBlipDiffusion, ProjLayer, HierarchicalUNetModel = import_original(
        args.deadiff.resolve(), args.lavis.resolve()
    )
    import kornia
    import transformers

    vocab_file = args.out / "vocab.txt.tmp"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    generator = torch.Generator().manual_seed(20240403)  # DEADiff's release date
    try:
        style_blip = tiny_blip(blip2, Blip2Qformer, VisionTransformer, vocab_file).eval()
        content_blip = tiny_blip(blip2, Blip2Qformer, VisionTransformer, vocab_file).eval()
    finally:
        vocab_file.unlink()
    style_proj = ProjLayer(in_dim=WIDTH, out_dim=WIDTH, hidden_dim=2 * WIDTH).eval()
    content_proj = ProjLayer(in_dim=WIDTH, out_dim=WIDTH, hidden_dim=2 * WIDTH).eval()
    unet_config = {  # configs/inference_deadiff_512x512.yaml at toy widths: same blocks, same content layers
        "image_size": LATENT_SIZE, "in_channels": 4, "out_channels": 4, "model_channels": WIDTH,
        "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 1, 1, 1], "num_heads": 2,
        "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": WIDTH, "use_checkpoint": False,
        "legacy": False, "content_layer": [4, 5, 6, 7, 8],
    }
    unet = HierarchicalUNetModel(**unet_config).eval()
    parts = {"model.diffusion_model.": unet, "style_blip.": style_blip, "content_blip.": content_blip,
             "style_proj_layer.": style_proj, "content_proj_layer.": content_proj}
    for prefix, module in parts.items():
        randomise(module, prefix)

    # DualBlipDiffusion's inference methods, on an object holding just what they read
    model = types.SimpleNamespace(
        training=False, num_query_token=16, _use_embeddings_cache=False,
        style_blip=style_blip, content_blip=content_blip,
        style_proj_layer=style_proj, content_proj_layer=content_proj,
        clip_mean=torch.tensor([0.48145466, 0.4578275, 0.40821073]),
        clip_std=torch.tensor([0.26862954, 0.26130258, 0.27577711]),
    )
    model.forward_ctx_embeddings = types.MethodType(DualBlipDiffusion.forward_ctx_embeddings, model)
    prompts, negative = ["a prompt", "another prompt"], "a negative prompt"
    text = {p: torch.randn((TEXT_TOKENS, WIDTH), generator=generator) for p in [*prompts, negative]}
    model.cond_stage_model = FixedTextEncoder(text)

    images = reference_images(generator)
    inp_image = app_input(images)
    cond = DualBlipDiffusion.get_learned_conditioning(
        model, {"target_text": prompts, "inp_image": inp_image, "subject_text": ["style"] * BATCH}
    )
    uncond = DualBlipDiffusion.get_learned_conditioning(model, {"target_text": [negative] * BATCH})
    # the visual features the style Q-Former reads, for localising a mismatch
    clip_input = kornia.enhance.normalize((inp_image + 1) / 2, model.clip_mean, model.clip_std)
    image_embeds = style_blip.ln_vision(style_blip.visual_encoder(clip_input))

    # ddim.py's classifier-free guidance batch for list conditioning: [uncond rows, cond rows] per entry,
    # with unconditional_conditioning=[uc, uc] as scripts/app.py passes it
    unconditional = [uncond, uncond]
    c_in = [[torch.cat([unconditional[i][j], cond[i][j]]) for j in range(2)] for i in range(2)]
    # 16x16 latents: the lowest level is then 2x2; at 1x1 ldm's and diffusers' GroupNorm (one channel per group
    # here) normalise a single value, and float32 rounding, divided by sqrt(eps), swamps the comparison
    latents = torch.randn((BATCH, 4, LATENT_SIZE, LATENT_SIZE), generator=generator)
    x_in = torch.cat([latents] * 2)
    t_in = torch.tensor(TIMESTEPS * 2)
    outputs = {
        "style_tokens": cond[0][0],
        "clip_image_embeds": image_embeds,
    }
    for weight in IMAGE_WEIGHTS:
        outputs[f"noise_pred_w{weight:g}"] = unet(x_in, t_in, context=c_in, img_weight=weight)
    assert torch.equal(cond[1][0], torch.zeros_like(cond[1][0]))  # "style" only: the content layers get zeros

    # the layout of deadiff_v1.ckpt's state_dict, for the parts this model has
    checkpoint = {prefix + k: v for prefix, module in parts.items() for k, v in module.state_dict().items()}
    regenerated = {  # (a tied weight, e.g. the BERT head's decoder, holds its twin's values and stays stored)
        k: list(v.shape)
        for k, v in checkpoint.items()
        if v.is_floating_point() and is_regenerated(k) and torch.equal(v, seeded_tensor(k, tuple(v.shape)))
    }
    tensors = {
        f"checkpoint.{k}": (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in checkpoint.items()
        if k not in regenerated
    }
    tensors.update({
        "input.reference_images": torch.from_numpy(images),
        "input.text_embeds": torch.stack([text[p] for p in prompts]),
        "input.negative_text_embeds": text[negative].unsqueeze(0),
        "input.latents": latents,
        **{f"output.{k}": v.float().contiguous() for k, v in outputs.items()},
    })
    save_file(tensors, str(args.out / "golden.safetensors"))
    meta = {
        "made_by": "tests/data/deadiff_golden/make_golden.py",
        "deadiff_commit": _commit(args.deadiff),
        "lavis_commit": _commit(args.lavis),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "kornia": kornia.__version__},
        "batch": BATCH,
        "timesteps": TIMESTEPS,
        "image_weights": IMAGE_WEIGHTS,
        "vocab": VOCAB,
        "condition_token_ids": {"style": style_blip.tokenizer("style").input_ids,
                                "content": style_blip.tokenizer("content").input_ids},
        "unet": unet_config,
        "clip_vision": {"hidden_size": WIDTH, "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 14,
                        "image_size": 224},
        "qformer": {"hidden_size": WIDTH, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "intermediate_size": 2 * WIDTH, "num_query_tokens": 16, "max_position_embeddings": 16},
        "proj_hidden_size": 2 * WIDTH,
        "regenerated": regenerated,  # checkpoint keys rebuilt with seeded.seeded_tensor(key, shape), in order
    }
    text = json.dumps(meta, indent=2)
    # lists of numbers on one line
    text = re.sub(r"\[\s*([-\d.,\s]*?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    (args.out / "golden.json").write_text(text + "\n")
    size = (args.out / "golden.safetensors").stat().st_size
    print(f"wrote {args.out}/golden.safetensors ({size / 1024:.0f} KiB) and golden.json")


def _commit(folder: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


if __name__ == "__main__":
    main()
