"""Benchmark: one denoising step at SD1.5 size on CPU, plain UNet against UNet + StyleCodes control module.

Random weights (timing does not depend on them), fp32, batch 1, 77x768 text states, the style map decoded and
prepared once beforehand (`decode_style`, `prepare_style`: what the pipeline does once per generation). Plain and
styled steps alternate so that load from other processes hits both alike; the report is the median of the repeats
(wall clock, and CPU time of this process as a check on a busy machine) and their ratio.

A third variant runs the control up blocks on concatenated zeros, as the published implementation does (this
module skips convolving them, see `zero_skip.resnet_on_zero_skip`), to show what that saves.

    python3 bench/bench_control_step.py            # 32x32 and 64x64 latents, 2 threads, 3 repeats

Needs about 7 GB of memory (SD1.5 UNet 3.4 GB + control module 2.7 GB, fp32).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from unittest import mock

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from stylecodes.models import control as control_module
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.sd15 import SD15_UNET_CONFIG


def _seconds(step) -> tuple[float, float]:
    """(wall, CPU) seconds of one call. CPU time of this process is less disturbed by other processes' load."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def _medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def _rounded(values: list[float]) -> list[float]:
    return [round(value, 2) for value in values]


def _resnet_on_concatenated_zeros(resnet, hidden, skip_channels, temb):
    """The published computation: build the zeros and run the resnet over them."""
    zeros = hidden.new_zeros((hidden.shape[0], skip_channels, *hidden.shape[2:]))
    return resnet(torch.cat([hidden, zeros], dim=1), temb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="latent sizes (pixels / 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant and size")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
    control = StyleCodesControlModel.from_unet(unet)
    text = torch.randn(1, 77, 768)  # (B, 77, 768) CLIP text states
    latent = torch.rand(1, 20) * 2 - 1  # a style latent in the dequantised range
    timestep = torch.tensor([500])

    rows = []
    with torch.inference_mode():
        for size in args.sizes:
            sample = torch.randn(1, 4, size, size)
            # once per generation, not timed per step
            style = control.prepare_style(control.decode_style(latent, size, size), 0.9)

            def plain(sample=sample):
                unet(sample, timestep, text)

            def styled(sample=sample, style=style):
                control(unet, sample, timestep, text, style)

            def styled_on_zeros(sample=sample, style=style):
                with mock.patch.object(control_module, "resnet_on_zero_skip", _resnet_on_concatenated_zeros):
                    control(unet, sample, timestep, text, style)

            variants = {"plain": plain, "styled": styled, "styled_on_zeros": styled_on_zeros}
            wall: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            flops = {}
            for name, step in variants.items():  # warm-up (allocator, oneDNN kernels), counting FLOPs meanwhile
                with FlopCounterMode(display=False) as counter:
                    step()
                flops[name] = counter.get_total_flops()
            for _ in range(args.repeats):
                for name, step in variants.items():
                    wall_s, cpu_s = _seconds(step)
                    wall[name].append(wall_s)
                    cpu[name].append(cpu_s)
            rows.append((size, _medians(wall), _medians(cpu), flops))
            for name in variants:
                print(f"{size}x{size} {name}: wall {_rounded(wall[name])} cpu {_rounded(cpu[name])}", flush=True)

    print("\nMedians; ratios against the plain UNet step. Wall clock (CPU time of this process in brackets):\n")
    print("| latent | plain UNet (s) | UNet + control (s) | ratio | control, zeros convolved (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for size, wall_m, cpu_m, _ in rows:
        cells = [f"{size}x{size}"]
        for name in ("plain", "styled", "styled_on_zeros"):
            cells.append(f"{wall_m[name]:.2f} [{cpu_m[name]:.2f}]")
            if name != "plain":
                cells.append(f"{wall_m[name] / wall_m['plain']:.2f}x [{cpu_m[name] / cpu_m['plain']:.2f}x]")
        print("| " + " | ".join(cells) + " |")
    print("\nFLOPs per step (torch.utils.flop_counter; independent of machine load):\n")
    print("| latent | plain UNet (GFLOP) | UNet + control | ratio | control, zeros convolved | ratio |")
    print("|---|---|---|---|---|---|")
    for size, _, _, flops in rows:
        plain_g, styled_g, zeros_g = (flops[name] / 1e9 for name in ("plain", "styled", "styled_on_zeros"))
        print(
            f"| {size}x{size} | {plain_g:.0f} | {styled_g:.0f} | {styled_g / plain_g:.2f}x "
            f"| {zeros_g:.0f} | {zeros_g / plain_g:.2f}x |"
        )


if __name__ == "__main__":
    main()
