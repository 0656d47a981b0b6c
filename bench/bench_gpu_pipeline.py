"""Benchmark: the full StyleCodes pipeline on a GPU at SD1.5 size (512x512, 20 DDIM steps, CFG 3).

Random weights at real size (SD1.5 UNet, VAE and CLIP ViT-L text encoder from their configs, the control module
built for that UNet): the cost of a forward pass does not depend on the values, and nothing is downloaded. Reports
seconds per image and peak GPU memory per dtype and batch size, with the style applied, and the same run without a
style (plain SD1.5 UNet path, the baseline) for the ratio. Target (issue 2): <= 0.5 s/image at batch 1 on an H100.

    python bench/bench_gpu_pipeline.py --dtypes fp16 bf16 --batches 1 4 8
    python bench/bench_gpu_pipeline.py --channels-last --compile default
    python bench/bench_gpu_pipeline.py --check-syncs --batches 2 --repeats 1   # no host sync inside a styled step
    python bench/bench_gpu_pipeline.py --dry-run      # CPU, demo model, tiny sizes: checks the harness only
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from stylecodes.codec import random_code
from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.pipelines.text_to_image import StyleCodesPipeline

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Settings:
    device: torch.device
    size: int
    steps: int
    batches: list[int]
    dtypes: list[str]
    repeats: int
    model_version: int


def build_sd15_pipeline(device: torch.device) -> StyleCodesPipeline:
    """SD1.5-size components with random weights, built directly on `device` in fp32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from stylecodes.demo import build_demo_tokenizer
    from stylecodes.models.control import StyleCodesControlModel
    from stylecodes.models.sd15 import SD15_UNET_CONFIG

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(  # SD1.5's VAE config
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(  # CLIP ViT-L/14's text tower
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
            )
        )
        control_model = StyleCodesControlModel.from_unet(unet)
    # The tokenizer's vocabulary only changes which ids are produced, not the cost: use the demo's offline one.
    return StyleCodesPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_demo_tokenizer(),
        unet=unet,
        control_model=control_model,
        scheduler=make_scheduler(),
        model_version=1,
    )


def build_demo_pipeline() -> StyleCodesPipeline:
    from stylecodes.engine import StyleEngine

    return StyleEngine.load(0).pipeline


def optimise(pipe: StyleCodesPipeline, *, attention: str, channels_last: bool, compile_mode: str) -> None:
    if attention == "classic":  # diffusers' pre-SDPA attention, for comparison
        from diffusers.models.attention_processor import AttnProcessor

        for model in (pipe.unet, pipe.control_model):
            for module in model.modules():
                if hasattr(module, "set_processor"):
                    module.set_processor(AttnProcessor())
    if channels_last:
        for module in (pipe.unet, pipe.control_model, pipe.vae):
            module.to(memory_format=torch.channels_last)
    if compile_mode != "none":
        # The styled path runs the control module's forward (which drives the UNet's blocks itself); the plain path
        # runs the UNet's forward. Compile both.
        pipe.control_model.forward = torch.compile(pipe.control_model.forward, mode=compile_mode)
        pipe.unet.forward = torch.compile(pipe.unet.forward, mode=compile_mode)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=compile_mode)


def time_generation(pipe: StyleCodesPipeline, settings: Settings, batch: int, styled: bool) -> tuple[float, float]:
    """Median seconds per image and peak GPU memory (GiB; 0 on CPU) for one batch size."""
    code = random_code(settings.model_version, np.random.default_rng(0))
    arguments = {
        "prompt": ["a lighthouse on a cliff at dusk, oil painting"] * batch,
        "style": [code if styled else None] * batch,
        "seed": list(range(batch)),
        "num_inference_steps": settings.steps,
        "width": settings.size,
        "height": settings.size,
    }
    pipe(**arguments)  # warm-up (and compilation)
    cuda = settings.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timings = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        pipe(**arguments)
        if cuda:
            torch.cuda.synchronize()
        timings.append((time.perf_counter() - start) / batch)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return statistics.median(timings), peak


def check_no_syncs_per_step(pipe: StyleCodesPipeline, settings: Settings) -> None:
    """One styled generation with every control-module step under CUDA's sync debug mode "error": a step that waits
    for the GPU (a value read back, a blocking copy from the host) raises instead of silently stalling the queue.
    Run it after a warm-up, which fills the module's small index caches (building those is a copy from the host)."""
    forward = pipe.control_model.forward

    def strict_forward(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return forward(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    pipe.control_model.forward = strict_forward
    try:
        code = random_code(settings.model_version, np.random.default_rng(0))
        size = {"width": settings.size, "height": settings.size}
        # one unstyled sample, so that the gather/scatter of the styled rows runs too
        pipe(["a"] * 2, style=[code, None], seed=[0, 1], num_inference_steps=2, **size)
    finally:
        pipe.control_model.forward = forward
    print("styled steps: no host synchronisation (CUDA sync debug mode 'error' raised nothing)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp16", "bf16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--attention", choices=["sdpa", "classic"], default="sdpa", help="sdpa = diffusers default")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune"], default="none")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unstyled (plain UNet) runs")
    parser.add_argument(
        "--check-syncs",
        action="store_true",
        help="after the first timed run, check that styled steps never sync (without --compile: compiling would)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="demo model on the CPU at 64 px, 2 steps: checks the harness, no numbers"
    )
    args = parser.parse_args()

    if args.dry_run:
        settings = Settings(torch.device("cpu"), 64, 2, [1, 2], ["fp32"], 1, model_version=0)
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU available; use --dry-run to check the harness on a CPU")
        settings = Settings(
            torch.device("cuda"), args.size, args.steps, args.batches, args.dtypes, args.repeats, model_version=1
        )
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    pipe = build_demo_pipeline() if args.dry_run else build_sd15_pipeline(settings.device)
    pipe.set_progress_bar_config(disable=True)
    device_name = torch.cuda.get_device_name() if settings.device.type == "cuda" else "CPU"
    prefix = "DRY RUN (demo model, not a benchmark) " if args.dry_run else ""
    print(f"{prefix}device: {device_name}, torch {torch.__version__}")
    print(
        f"{settings.size}x{settings.size}, {settings.steps} DDIM steps, CFG 3, attention={args.attention}, "
        f"channels_last={args.channels_last}, compile={args.compile}"
    )
    print("| dtype | batch | styled s/image | peak GiB | plain SD1.5 s/image (baseline) | styled / plain |")
    print("|---|---|---|---|---|---|")
    optimise(pipe, attention=args.attention, channels_last=args.channels_last, compile_mode=args.compile)
    for dtype_name in settings.dtypes:
        pipe.to(settings.device, DTYPES[dtype_name])
        for batch in settings.batches:
            styled, peak = time_generation(pipe, settings, batch, styled=True)
            if args.check_syncs and settings.device.type == "cuda":
                check_no_syncs_per_step(pipe, settings)
                args.check_syncs = False  # once is enough
            if args.no_baseline:
                print(f"| {dtype_name} | {batch} | {styled:.3f} | {peak:.1f} | - | - |")
                continue
            plain, _ = time_generation(pipe, settings, batch, styled=False)
            print(f"| {dtype_name} | {batch} | {styled:.3f} | {peak:.1f} | {plain:.3f} | {styled / plain:.2f}x |")


if __name__ == "__main__":
    main()
