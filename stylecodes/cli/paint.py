"""`stylecodes encode` and `stylecodes imagine`: images to codes, and prompts to pictures."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import sys
from pathlib import Path
from typing import Any

from stylecodes.checks import DEFAULT_STRENGTH, MAX_IMAGES_PER_CALL, STRENGTH_RANGE, check_int, check_number
from stylecodes.cli.common import EXIT_ERROR, CliError, device_and_dtype, save_png, version_option
from stylecodes.codec import parse_code
from stylecodes.images import ImageError, load_image
from stylecodes.models.deadiff.settings import ACCEPT_LICENSE_ENV, deadiff_settings
from stylecodes.requests import GenerationRequest
from stylecodes.styles import DEADIFF_DEFAULT_STRENGTH, DEADIFF_MODE, STYLECODE_MODE, CodeStyle, StyleImage
from stylecodes.versions import DEFAULT_VERSION, UnservedVersionError, get_spec

# `encode` loads and encodes this many images at a time: memory stays bounded however many files are named, and
# the first codes are printed while later files are still waiting.
ENCODE_CHUNK = 8


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    encode = commands.add_parser("encode", parents=[common], help="print the stylecode of each image")
    encode.add_argument("images", nargs="+", metavar="IMAGE")
    encode.set_defaults(run=run_encode)

    imagine = commands.add_parser("imagine", parents=[common], help="paint PROMPT in the style of a code or image")
    imagine.add_argument("prompt", metavar="PROMPT")
    imagine.add_argument("--code", help="stylecode to paint with (canonical or legacy form)")
    imagine.add_argument("--style-image", type=Path, metavar="IMG", help="image to take the style from")
    imagine.add_argument(
        "--mode",
        choices=(STYLECODE_MODE, DEADIFF_MODE),
        default=STYLECODE_MODE,
        help="how --style-image styles the picture: stylecode (its code, default) or deadiff (DEADiff's style "
        f"tokens; needs {ACCEPT_LICENSE_ENV}=1 for version 1, non-commercial use only; may be combined with --code)",
    )
    imagine.add_argument(
        "--strength", type=float, default=None,
        help="strength of the style image (or code), 0..1.5 (default 0.9; 1.0 with --mode deadiff, DEADiff's own)",
    )
    imagine.add_argument(
        "--lora",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a personal style from `stylecodes forge` (repeatable; combines with --code); its trigger words are "
        "added to the prompt",
    )
    imagine.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength, 0..2 (default 1)")
    imagine.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    imagine.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3)")
    imagine.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    imagine.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    imagine.add_argument("--width", type=int, default=512, help="multiple of 8 (default 512)")
    imagine.add_argument("--height", type=int, default=512, help="multiple of 8 (default 512)")
    imagine.add_argument("--count", type=int, default=1, help="number of images (seeds SEED, SEED+1, ...)")
    imagine.add_argument("--out", type=Path, default=None, help="output PNG (default: stylecodes-SEED.png)")
    imagine.set_defaults(run=run_imagine)


def run_encode(args: argparse.Namespace) -> int:
    version = version_option(args, default=DEFAULT_VERSION)
    encoder = None  # loaded with the first readable image: a run with only bad files loads no model
    failed = False
    for start in range(0, len(args.images), ENCODE_CHUNK):
        loaded = []
        for name in args.images[start : start + ENCODE_CHUNK]:
            try:
                loaded.append((name, load_image(name)))
            except ImageError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
        if not loaded:
            continue
        if encoder is None:
            from stylecodes.loaders import load_style_image_encoder

            device, _ = device_and_dtype(args)  # (the encoder always runs in float32)
            encoder = load_style_image_encoder(get_spec(version), device=device)
        codes = encoder.encode([image for _, image in loaded])
        for (name, _), code in zip(loaded, codes, strict=True):
            print(f"{code.canonical}\t{name}", flush=True)
    return EXIT_ERROR if failed else 0


def run_imagine(args: argparse.Namespace) -> int:
    deadiff = args.mode == DEADIFF_MODE
    if deadiff and args.style_image is None:
        raise CliError("--mode deadiff paints with a style image: give --style-image IMG.")
    if not deadiff and args.code and args.style_image:
        raise CliError("Give --code or --style-image, not both (or --mode deadiff to combine a code with an image).")
    code = parse_code(args.code) if args.code else None
    if not 0.0 <= args.lora_scale <= 2.0:
        raise CliError(f"--lora-scale must be in 0..2, got {args.lora_scale}.")
    adapters = _read_adapters(args.lora)
    forged_on = [a.manifest.model_version for a in adapters if a.manifest is not None]
    version = version_option(args, default=code.version if code else (forged_on or [DEFAULT_VERSION])[0])
    _check_adapter_versions(adapters, args.lora, version)
    if code is not None and code.version != version:
        raise UnservedVersionError(code.version, [version])
    if deadiff and not get_spec(version).is_demo:  # the operator's opt-in, before any model is loaded
        deadiff_settings().require_checkpoint()
    style_image = load_image(args.style_image) if args.style_image else None
    from stylecodes.engine import StyleEngine  # torch: imported once the cheap checks passed

    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    count = check_int("count", args.count, 1, MAX_IMAGES_PER_CALL)
    # Requests check every field when created: bad arguments fail before any model is loaded or downloaded. A style
    # image for the stylecode mode is encoded below, once the model is loaded (its strength is checked here already).
    default_strength = DEADIFF_DEFAULT_STRENGTH if deadiff else DEFAULT_STRENGTH
    strength = check_number("strength", default_strength if args.strength is None else args.strength, *STRENGTH_RANGE)
    styles: tuple = ()
    if code is not None:
        styles = (CodeStyle(code, DEFAULT_STRENGTH if deadiff else strength),)
    if deadiff:  # one StyleImage object for every request: the mode encodes it once
        styles = (*styles, StyleImage(style_image, DEADIFF_MODE, strength))
    requests = [
        GenerationRequest(
            prompt=with_trigger_words(args.prompt, adapters),
            seed=seed + index,
            negative_prompt=args.negative,
            styles=styles,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            width=args.width,
            height=args.height,
        )
        for index in range(count)
    ]
    device, dtype = device_and_dtype(args)
    engine = StyleEngine.load(version, device=device, dtype=dtype, show_progress=True)
    if style_image is not None and not deadiff:
        [image_code] = engine.encode([style_image])
        requests = [dataclasses.replace(request, styles=(CodeStyle(image_code, strength),)) for request in requests]
    if adapters:
        from stylecodes.lora.runtime import LoraAdapterCache

        with LoraAdapterCache(engine.pipeline.unet).active([(adapter, args.lora_scale) for adapter in adapters]):
            results = engine.generate(requests)
        loras = [
            {"sha256": adapter.sha256, "trigger_words": list(adapter.trigger_words), "scale": args.lora_scale}
            for adapter in adapters
        ]
        for result in results:
            result.metadata["loras"] = loras
    else:
        results = engine.generate(requests)
    out = args.out or Path(f"stylecodes-{seed}.png")
    for index, result in enumerate(results):
        path = out if count == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix or '.png'}")
        save_png(result.image, path, result.metadata)
        line = f"{path}\tseed {result.metadata['seed']}\tcode {result.metadata['style_code'] or '(none)'}"
        print(line + ("\tdeadiff" if result.metadata.get("deadiff_style") else ""))
    for warning in dict.fromkeys(warning for result in results for warning in result.warnings):  # once each
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _read_adapters(paths: list[Path]) -> list[Any]:
    """The --lora files, read and checked (SD LoRAs in diffusers' layout) before any model loads."""
    if not paths:
        return []
    from stylecodes.lora.adapter import LoraAdapter

    return [LoraAdapter.read(path) for path in paths]


def _check_adapter_versions(adapters: list[Any], paths: list[Path], version: int) -> None:
    for path, adapter in zip(paths, adapters, strict=True):
        if adapter.manifest is not None and adapter.manifest.model_version != version:
            raise CliError(
                f"--lora {path} was forged on model version {adapter.manifest.model_version}'s base; paint with "
                f"--model-version {adapter.manifest.model_version}."
            )


def with_trigger_words(prompt: str, adapters: list[Any]) -> str:
    if not adapters:
        return prompt
    from stylecodes.lora.runtime import with_trigger_words as add

    return add(prompt, adapters)
