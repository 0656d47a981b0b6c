"""`stylecodes dataset`, `train` and `eval`: make triples, train a new model version, measure versions."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from stylecodes.cli.common import EXIT_INTERRUPTED, CliError


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    dataset = commands.add_parser(
        "dataset", help="write (style image, target, prompt) triples as an imagefolder dataset (resumable)"
    )
    dataset.add_argument("out", type=Path, metavar="FOLDER")
    dataset.add_argument("--count", type=int, required=True, help="rows the dataset should hold")
    dataset.add_argument(
        "--generator", choices=("procedural",), default="procedural",
        help="procedural: the demo's palettes and patterns (no model needed)",
    )
    dataset.add_argument("--size", type=int, default=64, help="image side in pixels (procedural)")
    dataset.add_argument("--seed", type=int, default=0)
    dataset.add_argument("--batch-size", type=int, default=8)
    dataset.set_defaults(run=run_dataset)

    train = commands.add_parser("train", help="train the style autoencoder and control module (paper §3.4)")
    _add_train_options(train)
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser("eval", parents=[common], help="style and prompt fidelity of model versions")
    evaluate.add_argument("versions", nargs="+", type=int, metavar="VERSION", help="served version digits")
    evaluate.add_argument("--out", type=Path, default=Path("stylecodes-eval"), help="report folder")
    evaluate.add_argument("--styles", type=Path, nargs="*", default=None,
                          help="style images (default: the built-in held-out procedural styles)")
    evaluate.add_argument("--prompts", nargs="*", default=None, help="prompts (default: the benchmark's)")
    evaluate.add_argument("--size", type=int, default=None, help="image side (default: the version's own)")
    evaluate.add_argument("--steps", type=int, default=20)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(run=run_eval)


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from stylecodes.training.config import TrainConfig

    defaults = TrainConfig()
    help_text = {
        "base_model": "SD1.5-family diffusers folder or Hub id (frozen)",
        "image_encoder": "SigLIP folder or Hub id (frozen)",
        "dataset": "dataset folder (imagefolder), Hub dataset id, or `procedural`",
        "init_from": "fine-tune this served version's control module (e.g. 1) instead of a fresh one",
        "quantize_aware": "train through the 6-bit quantisation (straight-through) instead of skipping it",
        "gradient_checkpointing": "recompute activations in the backward pass (less memory, ~30%% slower)",
        "validation_styles": "style images for the validation grid",
        "validation_prompts": "prompts for the validation grid",
        "version": "version digit the exported model gets",
    }
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        kwargs: dict[str, Any] = {"default": default, "help": help_text.get(field.name, f"(default: {default})")}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(default, list):
            parser.add_argument(flag, nargs="*", **kwargs)
        elif field.name == "init_from":
            parser.add_argument(flag, type=int, **kwargs)
        else:
            parser.add_argument(flag, type=type(default), **kwargs)
    parser.add_argument("--resume", action="store_true", help="go on from the newest checkpoint in --output-dir")
    parser.add_argument("--no-export", action="store_true", help="do not write the version folder at the end")


def run_dataset(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from stylecodes.training.dataset import ProceduralTriples, rows_written, write_dataset

    if args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}.")
    generator = ProceduralTriples(seed=args.seed, size=args.size)
    done = rows_written(args.out)
    with tqdm(total=args.count, initial=min(done, args.count), desc="Triples", unit="row") as progress:
        made = write_dataset(generator, args.out, args.count, batch_size=args.batch_size, on_progress=progress.update)
    print(f"{args.out}: {max(done, args.count)} rows ({made} new, {done} already there).")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from stylecodes.training import data
    from stylecodes.training.config import TrainConfig
    from stylecodes.training.finish import export_run
    from stylecodes.training.parts import load_parts
    from stylecodes.training.train import train

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    config.check()
    columns = data.TripleColumns(config.style_column, config.image_column, config.text_column)
    dataset = data.open_dataset(config.dataset, columns, seed=config.seed)  # fails fast, before the models load
    parts = load_parts(config)
    result = train(config, resume=args.resume, parts=parts, dataset=dataset)
    if result.interrupted:
        print(f"Stopped at step {result.step}; checkpoint saved. Resume with --resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.no_export:
        folder = export_run(config, result, parts, dataset)
        print(f"Model version {config.version} written to {folder}; serve it with STYLECODES_MODEL_PATHS={folder}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from stylecodes.cli.common import device_and_dtype
    from stylecodes.training.evaluate import Benchmark, run_benchmark

    device, dtype = device_and_dtype(args)
    benchmark = Benchmark.default() if args.styles is None else Benchmark.from_files(args.styles)
    if args.prompts:
        benchmark = dataclasses.replace(benchmark, prompts=list(args.prompts))
    report = run_benchmark(
        args.versions, benchmark, args.out, size=args.size, steps=args.steps, seed=args.seed, device=device,
        dtype=dtype,
    )
    print(report.read_text())
    return 0
