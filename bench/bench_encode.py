"""Benchmark: image -> stylecode on the CPU at real size (SigLIP-base + the SD1.5 StyleCodes autoencoder).

Random weights built from configs (no download): the cost of a forward pass does not depend on the values. Only the
encoder is built, as `load_style_image_encoder` does for version 1: no UNet, no control blocks, no VAE.

Reports seconds per image (full path from a PIL image: resize to 512, SigLIP preprocessing, SigLIP, autoencoder,
quantisation) at several batch sizes, the SigLIP-only share as the baseline ratio, and the peak RSS of this process.
Targets (issue 2): <= 0.5 s/image on 2 cores, <= 1.5 GB peak RSS.

    python bench/bench_encode.py --threads 2
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import SiglipVisionConfig, SiglipVisionModel

from stylecodes.models.autoencoder import StyleAutoencoder
from stylecodes.models.image_encoder import SIGLIP_HIDDEN_LAYER, StyleImageEncoder


def build_encoder() -> StyleImageEncoder:
    torch.manual_seed(0)
    # SigLIP-base-patch16-224's vision tower (the defaults of SiglipVisionConfig are that model).
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12))
    autoencoder = StyleAutoencoder()  # defaults: the published SD1.5 autoencoder (768 -> 20 -> 1280-wide map)
    vision.eval().requires_grad_(False)
    autoencoder.eval().requires_grad_(False)
    return StyleImageEncoder(vision, autoencoder, version=1)


def photos(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)) for _ in range(count)]


def seconds_per_image(run, images: list[Image.Image], batch: int, repeats: int) -> float:
    run(images[:batch])  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for offset in range(0, len(images), batch):
            run(images[offset : offset + batch])
        timings.append((time.perf_counter() - start) / len(images))
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the target is for 2)")
    parser.add_argument("--images", type=int, default=8, help="images per timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    encoder = build_encoder()
    images = photos(args.images)
    params = {
        "siglip": sum(p.numel() for p in encoder.vision_model.parameters()),
        "autoencoder": sum(p.numel() for p in encoder.autoencoder.parameters()),
    }

    @torch.inference_mode()
    def full_siglip(batch: list[Image.Image]) -> None:
        """The published way: the whole tower with all hidden states, then pick [-2] (baseline)."""
        pixels = encoder.pixel_values(batch)
        encoder.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[SIGLIP_HIDDEN_LAYER]

    cores = os.cpu_count()
    print(f"torch {torch.__version__}, {args.threads} threads, {cores} cores, python {sys.version.split()[0]}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (above {cores} means other processes share the cores)")
    print(f"parameters: SigLIP vision {params['siglip'] / 1e6:.1f}M, autoencoder {params['autoencoder'] / 1e6:.1f}M")
    print("| batch | encode s/image (ours) | full SigLIP tower s/image (baseline) | ours / baseline | CPU s/image |")
    print("|---|---|---|---|---|")
    for batch in args.batches:
        cpu_start = time.process_time()
        ours = seconds_per_image(encoder.encode, images, batch, args.repeats)
        cpu = (time.process_time() - cpu_start) / (len(images) * (args.repeats + 1) + batch - len(images))
        base = seconds_per_image(full_siglip, images, batch, args.repeats)
        print(f"| {batch} | {ours:.3f} | {base:.3f} | {ours / base:.2f}x | {cpu:.3f} |")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"peak RSS: {peak_rss_mb:.0f} MB (whole process, incl. torch/transformers/diffusers imports)")
    unets = [o for o in gc.get_objects() if type(o).__name__ in ("UNet2DConditionModel", "StyleCodesControlModel")]
    print(f"UNet or control module objects alive: {len(unets)}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
