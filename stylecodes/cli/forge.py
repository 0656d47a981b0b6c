"""`stylecodes forge`: a personal style (a LoRA adapter) from a folder or zip of your own images (StyleForge).

    stylecodes forge ./my-images --out my-style.safetensors
    stylecodes imagine "a lighthouse at dusk" --lora my-style.safetensors

Writes the adapter, its manifest with the file's sha256 (`my-style.safetensors.json`) and a 2x2 preview grid
(`my-style.preview.png`). Every `--checkpoint-every` steps the run is saved to `my-style.safetensors.checkpoint`:
after Ctrl+C or a crash, the same command continues from there (`--restart` starts over).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from stylecodes.cli.common import CliError, device_and_dtype, version_option
from stylecodes.files import write_atomically
from stylecodes.training.forge.config import ForgeConfig
from stylecodes.training.forge.imageset import collect_path
from stylecodes.versions import DEFAULT_VERSION

_DEFAULTS = ForgeConfig()


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    forge = commands.add_parser(
        "forge",
        parents=[common],
        help="train a personal style (LoRA) from a folder or .zip of 5-40 images (15-20 work best)",
        epilog="Training precision: --dtype auto is bfloat16 on CUDA and float32 on CPU; float16 is refused "
        "(its gradients underflow without loss scaling).",
    )
    forge.add_argument("images", type=Path, metavar="IMAGES", help="a folder of images or a .zip of them")
    forge.add_argument("--out", type=Path, required=True, help="the adapter to write, e.g. my-style.safetensors")
    forge.add_argument(
        "--auxiliary",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of auxiliary artworks (mostly people) bound to the word `style`; without it the base model "
        "generates DreamBooth prior images instead",
    )
    forge.add_argument("--steps", type=int, default=_DEFAULTS.steps, help=f"training steps (default {_DEFAULTS.steps})")
    forge.add_argument("--rank", type=int, default=_DEFAULTS.rank, help=f"LoRA rank (default {_DEFAULTS.rank})")
    forge.add_argument("--learning-rate", type=float, default=_DEFAULTS.learning_rate, help="default 1e-4")
    forge.add_argument("--resolution", type=int, default=None, help="training size in px (default: the model's)")
    forge.add_argument("--trigger", default=_DEFAULTS.trigger, help="the [V] of `[V] style` (default sks)")
    forge.add_argument("--prior-images", type=int, default=_DEFAULTS.prior_images, help="generated prior images")
    forge.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every, metavar="N")
    forge.add_argument("--preview-steps", type=int, default=_DEFAULTS.preview_steps, metavar="N")
    forge.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    forge.add_argument("--restart", action="store_true", help="ignore a checkpoint left by an interrupted run")
    forge.set_defaults(run=run_forge)


def run_forge(args: argparse.Namespace) -> int:
    version = version_option(args, default=DEFAULT_VERSION)
    if args.out.suffix != ".safetensors":
        raise CliError(f"--out must end in .safetensors, got {args.out}.")
    config = ForgeConfig(
        trigger=args.trigger,
        steps=args.steps,
        learning_rate=args.learning_rate,
        rank=args.rank,
        resolution=args.resolution,
        prior_images=args.prior_images,
        checkpoint_every=args.checkpoint_every,
        preview_steps=args.preview_steps,
        seed=args.seed,
        extra={"name": args.out.stem},
    )  # ValueError names a bad setting before anything is loaded
    images = collect_path(args.images)  # ImageSetError says what is wrong with the set
    auxiliary = collect_path(args.auxiliary, min_images=1) if args.auxiliary else None
    for warning in images.warnings:
        print(f"warning: {warning}")

    import torch

    from stylecodes.training.forge.base import ForgeBase
    from stylecodes.training.forge.checkpoint import ForgeCheckpoint
    from stylecodes.training.forge.train import forge

    checkpoint_path = args.out.with_name(args.out.name + ".checkpoint")
    resume = None
    if checkpoint_path.is_file() and not args.restart:
        resume = ForgeCheckpoint.from_bytes(checkpoint_path.read_bytes())
        print(f"Resuming from step {resume.step} ({checkpoint_path}; --restart starts over).")
    device, dtype = device_and_dtype(args)
    if dtype == torch.float16:
        if args.dtype != "auto":
            raise CliError("Training does not run in float16 (its gradients underflow); use --dtype bfloat16.")
        dtype = torch.bfloat16
    base = ForgeBase.load(version, device=device, dtype=dtype)
    print(
        f"Forging `{args.out.stem}` from {len(images)} images on {base.label}, {config.steps} steps at "
        f"{config.resolution or base.native_resolution} px ({device}, {str(dtype).removeprefix('torch.')})."
    )
    reporter = _ProgressPrinter()
    result = forge(
        base,
        images,
        config,
        auxiliary=auxiliary,
        resume=resume,
        on_progress=reporter,
        on_checkpoint=lambda checkpoint: _write(checkpoint_path, checkpoint.to_bytes()),
    )
    reporter.close()
    manifest_path = result.adapter.save(args.out)
    preview_path = args.out.with_name(args.out.stem + ".preview.png")
    result.preview_grid.save(preview_path)
    checkpoint_path.unlink(missing_ok=True)
    source = "auxiliary folder" if result.prior_source == "auxiliary" else "generated DreamBooth prior images"
    print(f"{args.out}\tsha256 {result.adapter.sha256}\t{len(result.adapter.to_bytes()) / 2**20:.1f} MiB")
    print(f"manifest {manifest_path}\tpreviews {preview_path}")
    print(
        f"dual binding with {source}; trigger `{config.style_prompt}`; {result.seconds / 60:.1f} min. "
        f'Use it: stylecodes imagine "..." --lora {args.out}'
    )
    return 0


class _ProgressPrinter:
    """A progress bar for the training steps (and a line per batch of prior images)."""

    def __init__(self) -> None:
        self.bar = None
        self.started = time.perf_counter()

    def __call__(self, progress) -> None:
        if progress.phase == "priors":
            print(f"prior images {progress.step}/{progress.total}", flush=True)
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=progress.total, initial=progress.step - 1, desc="Forging", unit="step")
        if progress.phase == "training":
            self.bar.set_postfix(loss=f"{progress.loss:.4f}", eta=f"{progress.eta_seconds / 60:.1f}min", refresh=False)
            self.bar.update(progress.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write(path: Path, data: bytes) -> None:
    write_atomically(path, data)
