"""Benchmark: one denoising step at SD1.5 size on CPU, plain UNet against UNet + DEADiff's processors.

Random weights (timing does not depend on them), fp32, 77x768 text states, 16 random style tokens; the conditioning
is built once beforehand, as the style mode does per generation. DEADiff adds 16 image keys and values to each of
the 16 cross-attentions (11 projected from the tokens, 5 zeros). Plain and DEADiff steps alternate so that load from
other processes hits both alike; the report is the median of the repeats (wall clock, and CPU time of this process)
and their ratio, plus FLOPs per step.

    python3 bench/bench_deadiff_step.py                 # 32x32 and 64x64 latents, batch 1, 2 threads
    python3 bench/bench_deadiff_step.py --encode        # also: one style image through CLIP ViT-L + Q-Former

For a combined modes benchmark, `deadiff_step(unet)` returns the DEADiff step for a plain UNet's arguments.
Needs about 4 GB of memory (SD1.5 UNet 3.4 GB, fp32; with --encode about 2 GB more).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import UNet2DConditionModel
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from stylecodes.models.deadiff.model import DEADiffModel
from stylecodes.models.sd15 import SD15_UNET_CONFIG

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object]
# Only the image projections take part in a step; a one-layer encoder of the right token width keeps this cheap.
STEP_ONLY_ENCODER = {
    "vision_config": {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1},
    "qformer_config": {"num_hidden_layers": 1, "encoder_hidden_size": 64},
}


def deadiff_step(unet: UNet2DConditionModel, model: DEADiffModel | None = None) -> Step:
    """`step(sample, timestep, text)`: the UNet call with DEADiff's processors, for random style tokens (the
    conditioning is made on the first call for its batch and reused, as per generation)."""
    if model is None:
        model = DEADiffModel(encoder_config=STEP_ONLY_ENCODER).to(unet.device)
        if model.dtype != unet.dtype:  # (diffusers logs a warning on every dtype cast)
            model.to(dtype=unet.dtype)
    prepared: dict[int, object] = {}

    def step(sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> object:
        batch = sample.shape[0]
        if batch not in prepared:
            tokens = torch.randn(batch, 16, 768, generator=torch.Generator().manual_seed(0))
            prepared[batch] = model.conditioning(tokens, 1.0)
        with model.applied(unet, prepared[batch]):
            return unet(sample, timestep, text)

    return step


def _seconds(step: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def _rounded(values: list[float]) -> list[float]:
    return [round(value, 2) for value in values]


def _encode_seconds(repeats: int) -> list[float]:
    """One 512x512 picture through DEADiff's full-size style encoder (random weights), after a warm-up."""
    model = DEADiffModel()  # CLIP ViT-L (23 layers) + 12-layer Q-Former + projection, float32
    image = Image.new("RGB", (512, 512), (120, 80, 200))
    model.style_encoder.encode([image])
    return [_seconds(lambda: model.style_encoder.encode([image]))[0] for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="latent sizes (pixels / 8)")
    parser.add_argument("--batch", type=int, default=1, help="UNet batch (2 = one image with guidance)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant and size")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--encode", action="store_true", help="also time the style encoder once per image")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
    styled = deadiff_step(unet)
    text = torch.randn(args.batch, 77, 768)
    timestep = torch.tensor([500] * args.batch)
    rows = []
    with torch.inference_mode():
        for size in args.sizes:
            sample = torch.randn(args.batch, 4, size, size)
            variants = {
                "plain": lambda s=sample: unet(s, timestep, text),
                "deadiff": lambda s=sample: styled(s, timestep, text),
            }
            flops = {}
            for name, step in variants.items():  # warm-up, counting FLOPs meanwhile
                with FlopCounterMode(display=False) as counter:
                    step()
                flops[name] = counter.get_total_flops()
            wall: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, step in variants.items():
                    wall_s, cpu_s = _seconds(step)
                    wall[name].append(wall_s)
                    cpu[name].append(cpu_s)
            for name in variants:
                print(f"{size}x{size} {name}: wall {_rounded(wall[name])} cpu {_rounded(cpu[name])}", flush=True)
            rows.append((size, {n: statistics.median(v) for n, v in wall.items()},
                         {n: statistics.median(v) for n, v in cpu.items()}, flops))

    print(f"\nBatch {args.batch}; medians; ratio against the plain UNet step (CPU time of this process in brackets):\n")
    print("| latent | plain UNet (s) | UNet + DEADiff (s) | ratio | GFLOP plain | GFLOP DEADiff | FLOP ratio |")
    print("|---|---|---|---|---|---|---|")
    for size, wall_m, cpu_m, flops in rows:
        print(
            f"| {size}x{size} | {wall_m['plain']:.2f} [{cpu_m['plain']:.2f}] | {wall_m['deadiff']:.2f} "
            f"[{cpu_m['deadiff']:.2f}] | {wall_m['deadiff'] / wall_m['plain']:.3f}x "
            f"[{cpu_m['deadiff'] / cpu_m['plain']:.3f}x] | {flops['plain'] / 1e9:.1f} | {flops['deadiff'] / 1e9:.1f} "
            f"| {flops['deadiff'] / flops['plain']:.4f}x |"
        )
    if args.encode:
        seconds = _encode_seconds(args.repeats)
        print(f"\nStyle encoder (once per style image, 512x512 picture): {[round(s, 2) for s in seconds]} s, "
              f"median {statistics.median(seconds):.2f} s")


if __name__ == "__main__":
    main()
