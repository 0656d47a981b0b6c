"""Benchmark: a personal style (StyleForge LoRA) — minutes per style, adapter swap latency, step-time ratio.

    python3 bench/bench_forge.py --model tiny           # the demo model (64 px), CPU: the whole default run
    python3 bench/bench_forge.py --model sd15 --device cuda --dtype bfloat16   # SD1.5-sized, random weights

1. Forge: `forge()` with the default `ForgeConfig` (500 steps, 20 generated prior images, previews every 100
   steps) on 16 images; wall minutes per style, split into prior images, training steps and previews. `--steps`
   shortens the run for a quick look (the report scales nothing: it says what ran).
2. Swap latency: from the artifact store (local folder) to the first denoising step: read and sha256-check the
   file, parse it, load it into the UNet (`load_lora_adapter`), activate it, one UNet step. Then the same switch
   to an adapter already in the cache (`set_adapters` only).
3. Step time with an active adapter against the plain UNet (adapters disabled): alternating, medians.

`--model sd15` builds an SD1.5-shaped UNet/VAE/text encoder with random weights (timing does not depend on them;
no download) with the demo's tokenizer, which pads to the same 77 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from registry.artifacts import LocalArtifactStore, content_key
from stylecodes.lora.adapter import LoraAdapter
from stylecodes.lora.runtime import LoraAdapterCache
from stylecodes.training.forge.base import ForgeBase
from stylecodes.training.forge.config import ForgeConfig
from stylecodes.training.forge.imageset import ForgeImage, ImageSet, pixel_sha256
from stylecodes.training.forge.train import forge


def sd15_base(device: torch.device, dtype: torch.dtype) -> ForgeBase:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from stylecodes.demo.components import build_demo_tokenizer
    from stylecodes.models.sd15 import SD15_UNET_CONFIG

    tokenizer = build_demo_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(  # CLIP ViT-L/14's text tower (SD1.5's)
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    )  # fmt: skip
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    vae.to(device, torch.float32)
    text_encoder.to(device, dtype)
    unet.to(device, dtype)
    return ForgeBase(vae, text_encoder, tokenizer, unet, "SD1.5-shaped, random weights", 1)


def image_set(count: int, size: int) -> ImageSet:
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        images.append(ForgeImage(f"{index}.png", image, pixel_sha256(image)))
    return ImageSet(images)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forge_one(base: ForgeBase, args: argparse.Namespace) -> LoraAdapter:
    device = base.device
    phases: dict[str, float] = {"priors": 0.0, "training": 0.0, "previews": 0.0}
    last = [time.perf_counter()]

    def on_progress(progress) -> None:
        synchronize(device)
        now = time.perf_counter()
        phases[progress.phase] += now - last[0]
        last[0] = now

    config = ForgeConfig(steps=args.steps)
    started = time.perf_counter()
    result = forge(base, image_set(args.images, base.native_resolution), config, on_progress=on_progress)
    total = time.perf_counter() - started
    print(f"forge: {args.steps} steps, {args.images} images, {config.prior_images} generated prior images")
    print(f"  total {total / 60:.2f} min: prior images {phases['priors']:.1f} s, training steps "
          f"{phases['training']:.1f} s ({phases['training'] / args.steps * 1000:.0f} ms/step), previews at "
          f"checkpoints {phases['previews']:.1f} s, final previews + adapter {total - sum(phases.values()):.1f} s"
    )  # fmt: skip
    print(f"  adapter {len(result.adapter.to_bytes()) / 2**20:.2f} MiB, rank {config.rank}")
    return result.adapter


def random_adapter(base: ForgeBase) -> LoraAdapter:
    """The default config's LoRA layers with random (non-zero) weights: what a trained adapter costs to use."""
    from stylecodes.lora.manifest import AdapterManifest
    from stylecodes.training.forge.train import ADAPTER_NAME, _add_lora

    config = ForgeConfig()
    with torch.no_grad():
        for parameter in _add_lora(base, config).values():
            parameter.normal_(0, 0.01)
    manifest = AdapterManifest(
        ("sks style",), base.label, 1, config.rank, config.lora_alpha, 0, 512, 0, "generated", 1e-4
    )
    adapter = LoraAdapter.from_unet(base.unet, ADAPTER_NAME, manifest)
    base.unet.unload_lora()
    print(f"adapter (untrained, --swap-only): {len(adapter.to_bytes()) / 2**20:.2f} MiB, rank {config.rank}")
    return adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=ForgeConfig().steps)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (step-time ratio)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--swap-only", action="store_true", help="skip forging (hours at SD1.5 size on a CPU): time a rank-8 adapter"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    base = ForgeBase.load(0, device=device, dtype=dtype) if args.model == "tiny" else sd15_base(device, dtype)
    size = base.native_resolution
    print(f"{base.label}: {size} px, {args.device} {args.dtype}, torch {torch.__version__}, {args.threads} thread(s)")

    # 1. Forge one style (or, with --swap-only, make an untrained adapter of the default shape to time).
    adapter = forge_one(base, args) if not args.swap_only else random_adapter(base)

    # 2. Swap latency: store -> first step.
    unet = base.unet
    sample = torch.randn(1, 4, size // 8, size // 8, device=device, dtype=dtype)
    text = base.encode_prompts(["a cat, sks style"])
    timestep = torch.tensor([500], device=device)
    cache = LoraAdapterCache(unet)
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        store = LocalArtifactStore(folder)
        data = adapter.to_bytes()
        ref = asyncio.run(store.put(content_key("loras", data, ".safetensors"), data))
        unet(sample, timestep, encoder_hidden_states=text)  # warm-up
        synchronize(device)
        tick = time.perf_counter()
        adapter = LoraAdapter.from_bytes(asyncio.run(store.get(ref.uri, sha256=ref.sha256)))
        loaded = time.perf_counter()
        cache.activate([(adapter, 1.0)])
        activated = time.perf_counter()
        unet(sample, timestep, encoder_hidden_states=text)
        synchronize(device)
        first = time.perf_counter()
        milliseconds = [(first - tick) * 1000, (loaded - tick) * 1000, (activated - loaded) * 1000]
        milliseconds.append((first - activated) * 1000)
        print("swap (cold): {:.0f} ms = read+parse {:.0f} ms, load+activate {:.0f} ms, first step {:.0f} ms".format(
            *milliseconds))  # fmt: skip
        cache.deactivate()
        tick = time.perf_counter()
        cache.activate([(adapter, 1.0)])
        print(f"swap (cached): activate {(time.perf_counter() - tick) * 1000:.1f} ms")

        # 3. Step time with the adapter against without.
        times: dict[str, list[float]] = {"plain": [], "lora": []}
        for _ in range(args.repeats):
            for name in ("plain", "lora"):
                cache.activate([(adapter, 1.0)] if name == "lora" else [])
                synchronize(device)
                tick = time.perf_counter()
                unet(sample, timestep, encoder_hidden_states=text)
                synchronize(device)
                times[name].append(time.perf_counter() - tick)
    plain, lora = statistics.median(times["plain"]), statistics.median(times["lora"])
    print(f"step: plain {plain * 1000:.1f} ms, with adapter {lora * 1000:.1f} ms, ratio {lora / plain:.3f} "
          f"(medians of {args.repeats}; batch 1, one UNet call)")  # fmt: skip


if __name__ == "__main__":
    main()
