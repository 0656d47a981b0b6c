"""The learned prior against uniform random codes, for one model version (default: the demo).

    python3 bench/bench_prior.py --version 0 --count 32

1. Distance to real codes: the version's `prior.json` report (sampled codes -> nearest held-out real code, for the
   prior, for uniform codes and for real training codes), measured when the prior was fitted.
2. Do the images follow the code? Paint one image per random code, encode the image, and measure how far its code
   lands from the code it was painted with (lower: the model can paint that code), and how often it is the nearest
   among all the drawn codes (top-1 retrieval, chance 1/count). Prior and uniform codes, same seeds and prompts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stylecodes.engine import StyleEngine
from stylecodes.prior import prior_path, sample_codes
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle
from stylecodes.training.evaluate import DEFAULT_PROMPTS, code_latents


def follow_score(engine: StyleEngine, codes, size: int, steps: int) -> tuple[float, float]:
    requests = [
        GenerationRequest(
            DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)], seed=i, styles=(CodeStyle(code),), steps=steps, width=size,
            height=size,
        )
        for i, code in enumerate(codes)
    ]
    images = [result.image for result in engine.generate(requests)]
    painted, drawn = code_latents(engine.encode(images)), code_latents(codes)
    distances = np.linalg.norm(painted[:, None] - drawn[None], axis=-1)  # (n, n)
    return float(np.diag(distances).mean()), float(np.mean(distances.argmin(axis=1) == np.arange(len(codes))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", type=int, default=0)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = prior_path(args.version)
    if path is None:
        raise SystemExit(f"version {args.version} has no prior.json")
    prior = json.loads(Path(path).read_text())
    print(f"prior: {prior['components']} components fitted on {prior['fitted_on']} real codes")
    print("distance to the nearest held-out real code:", json.dumps(prior["report"]))
    engine = StyleEngine.load(args.version)
    for name, uniform in (("prior", False), ("uniform", True)):
        codes = sample_codes(args.version, args.count, np.random.default_rng(0), uniform=uniform)
        distance, retrieval = follow_score(engine, codes, args.size, args.steps)
        print(f"{name:8s} codes: painted image's code lands {distance:.3f} from its code; "
              f"top-1 retrieval {retrieval:.0%} (chance {1 / args.count:.0%})")


if __name__ == "__main__":
    main()
