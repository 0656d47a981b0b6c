"""`stylecodes` command line: encode images to codes, paint with them, and inspect, mix or draw codes.

    stylecodes encode painting.jpg photo.png
    stylecodes imagine "a lighthouse at dusk" --code C_d_AAI_rQglIvUb1_fC1 --seed 7 --out lighthouse.png
    stylecodes decode C_d_AAI_rQglIvUb1_fC1
    stylecodes mix "C_d_AAI_rQglIvUb1_fC1::2 KDArLSITDi8AAD8hDwQ/Cwk/Li0::1"
    stylecodes random
    stylecodes convert-checkpoint controlnet_model_11_80000.bin stylecodes_v1.safetensors

Every command takes --model-version (default 1, the published release; 0 is the offline demo model whose images
are not meaningful), --device and --dtype. Errors are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from stylecodes.codec import KNOWN_VERSIONS, LEGACY_VERSION, StyleCode, mix, parse_code, random_code
from stylecodes.hub import ModelLoadError
from stylecodes.images import ImageError, load_image
from stylecodes.versions import DEFAULT_VERSION, ModelVersionSpec, UnservedVersionError, get_spec

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
_DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"cpu|cuda(?::(?P<index>\d+))?")  # what --device accepts (besides auto)
# `encode` loads and encodes this many images at a time: memory stays bounded however many files are named, and
# the first codes are printed while later files are still waiting.
ENCODE_CHUNK = 8


class CliError(Exception):
    """A user mistake the command line reports in one line."""


# Errors caused by input or environment, reported in one line; anything else is a bug and keeps its traceback.
# (ValueError covers CodeError, ImageError, UnservedVersionError, CheckpointError and pipeline argument errors.)
USER_ERRORS: tuple[type[BaseException], ...] = (CliError, ValueError, ModelLoadError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_option_values(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model-version",
        type=int,
        default=None,
        metavar="N",
        help="model version: 1 = published StyleCodes v1 (default; for `imagine --code` the code's own version), "
        "0 = demo model (tiny random weights: its images are not meaningful)",
    )
    common.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    common.add_argument(
        "--dtype",
        default="auto",
        choices=_DTYPES,
        help="painting precision: auto = float16 on CUDA, float32 on CPU (encoding images always runs in float32)",
    )

    parser = argparse.ArgumentParser(
        prog="stylecodes",
        description="Turn images into 21-character stylecodes and paint in their style (StyleCodes, SD1.5).",
        epilog="A code that starts with `-` is read as a code after --code; elsewhere put `--` before it, "
        "e.g. `stylecodes decode -- -AbC...`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    encode = commands.add_parser("encode", parents=[common], help="print the stylecode of each image")
    encode.add_argument("images", nargs="+", metavar="IMAGE")
    encode.set_defaults(run=_encode)

    imagine = commands.add_parser("imagine", parents=[common], help="paint PROMPT in the style of a code or image")
    imagine.add_argument("prompt", metavar="PROMPT")
    style = imagine.add_mutually_exclusive_group()
    style.add_argument("--code", help="stylecode to paint with (canonical or legacy form)")
    style.add_argument("--style-image", type=Path, metavar="IMG", help="image to take the style from")
    imagine.add_argument("--strength", type=float, default=0.9, help="style strength, 0..1.5 (default 0.9)")
    imagine.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    imagine.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3)")
    imagine.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    imagine.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    imagine.add_argument("--width", type=int, default=512, help="multiple of 8 (default 512)")
    imagine.add_argument("--height", type=int, default=512, help="multiple of 8 (default 512)")
    imagine.add_argument("--count", type=int, default=1, help="number of images (seeds SEED, SEED+1, ...)")
    imagine.add_argument("--out", type=Path, default=None, help="output PNG (default: stylecodes-SEED.png)")
    imagine.set_defaults(run=_imagine)

    decode = commands.add_parser("decode", parents=[common], help="show a code's version, both forms and levels")
    decode.add_argument("code", metavar="CODE")
    decode.set_defaults(run=_decode)

    mixer = commands.add_parser("mix", parents=[common], help='mix codes: "A::2 B::1" (weighted mean)')
    mixer.add_argument("mix", metavar="MIX")
    mixer.set_defaults(run=_mix)

    rand = commands.add_parser("random", parents=[common], help="print a random code")
    rand.add_argument("--seed", type=int, default=None, help="seed for a reproducible random code")
    rand.set_defaults(run=_random)

    convert = commands.add_parser(
        "convert-checkpoint",
        parents=[common],
        help="convert a .bin control checkpoint to .safetensors (checked against --model-version's model first)",
    )
    convert.add_argument("src", type=Path, metavar="SRC")
    convert.add_argument("dst", type=Path, metavar="DST")
    convert.set_defaults(run=_convert)
    return parser


# ------------------------------------------------------------------------------------------------------- commands


def _encode(args: argparse.Namespace) -> int:
    version = _version(args, default=DEFAULT_VERSION)
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
            from stylecodes.image_encoder import StyleImageEncoder

            device, _ = _device_and_dtype(args)  # (the encoder always runs in float32)
            encoder = StyleImageEncoder.load(get_spec(version), device=device)
        codes = encoder.encode([image for _, image in loaded])
        for (name, _), code in zip(loaded, codes, strict=True):
            print(f"{code.canonical}\t{name}", flush=True)
    return EXIT_ERROR if failed else 0


def _imagine(args: argparse.Namespace) -> int:
    code = parse_code(args.code) if args.code else None
    version = _version(args, default=code.version if code else DEFAULT_VERSION)
    if code is not None and code.version != version:
        raise UnservedVersionError(code.version, [version])
    style_image = load_image(args.style_image) if args.style_image else None
    from stylecodes.engine import GenerationRequest, StyleEngine  # torch: imported once the cheap checks passed
    from stylecodes.pipeline import MAX_IMAGES_PER_CALL, check_int

    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    count = check_int("count", args.count, 1, MAX_IMAGES_PER_CALL)
    # Requests check every field when created: bad arguments fail before any model is loaded or downloaded.
    requests = [
        GenerationRequest(
            prompt=args.prompt,
            seed=seed + index,
            negative_prompt=args.negative,
            style=code,  # a style image is encoded below, once the model is loaded
            strength=args.strength,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            width=args.width,
            height=args.height,
        )
        for index in range(count)
    ]
    device, dtype = _device_and_dtype(args)
    engine = StyleEngine.load(version, device=device, dtype=dtype, show_progress=True)
    if style_image is not None:
        [image_code] = engine.encode([style_image])
        requests = [dataclasses.replace(request, style=image_code) for request in requests]
    results = engine.generate(requests)
    out = args.out or Path(f"stylecodes-{seed}.png")
    for index, result in enumerate(results):
        path = out if count == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix or '.png'}")
        _save_png(result.image, path, result.metadata)
        print(f"{path}\tseed {result.metadata['seed']}\tcode {result.metadata['style_code'] or '(none)'}")
    for warning in dict.fromkeys(warning for result in results for warning in result.warnings):  # once each
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _decode(args: argparse.Namespace) -> int:
    code = parse_code(args.code)
    _check_version_option(args, code)
    print(f"version:   {code.version} ({KNOWN_VERSIONS[code.version]})")
    print(f"canonical: {code.canonical}")
    no_legacy = f"(none: only version-{LEGACY_VERSION} codes have a legacy form)"
    print(f"legacy:    {code.legacy if code.version == LEGACY_VERSION else no_legacy}")
    print(f"levels:    {' '.join(str(level) for level in code.levels)}")
    return 0


def _mix(args: argparse.Namespace) -> int:
    code = mix(args.mix)
    _check_version_option(args, code)
    print(code.canonical)
    return 0


def _random(args: argparse.Namespace) -> int:
    import numpy as np

    version = _version(args, default=DEFAULT_VERSION)
    print(random_code(version, np.random.default_rng(args.seed)).canonical)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from stylecodes.checkpoint import convert_to_safetensors

    spec = get_spec(_version(args, default=DEFAULT_VERSION))
    print(convert_to_safetensors(args.src, args.dst, expected=_control_model_layout(spec)))
    return 0


# -------------------------------------------------------------------------------------------------------- helpers


def _attach_option_values(argv: list[str]) -> list[str]:
    """`--code -Abc...` -> `--code=-Abc...`: a code may start with `-`, which argparse would take for an option."""
    result: list[str] = []
    for index, item in enumerate(argv):
        if index > 0 and argv[index - 1] == "--code" and item.startswith("-") and result[-1] == "--code":
            result[-1] = f"--code={item}"
        else:
            result.append(item)
    return result


def _version(args: argparse.Namespace, *, default: int) -> int:
    version = default if args.model_version is None else args.model_version
    get_spec(version)  # UnservedVersionError names the versions that exist
    return version


def _check_version_option(args: argparse.Namespace, code: StyleCode) -> None:
    if args.model_version is not None and args.model_version != code.version:
        raise CliError(f"The code is version {code.version} but --model-version is {args.model_version}.")


def _control_model_layout(spec: ModelVersionSpec) -> Any:
    """The control module that version `spec` loads, without real weights: the keys and shapes a checkpoint needs."""
    if spec.is_demo:
        from stylecodes.demo import build_demo_components

        return build_demo_components().control_model  # tiny; built for real in a fraction of a second
    import torch

    from stylecodes.control import StyleCodesControlModel
    from stylecodes.sd15 import SD15_UNET_CONFIG

    with torch.device("meta"):  # every published version is built on SD1.5: 675M parameters, none allocated
        return StyleCodesControlModel.from_unet_config(SD15_UNET_CONFIG, **spec.autoencoder_config)


def _device_and_dtype(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Library chatter (deprecations, backend fallbacks) is not for CLI users; progress bars stay on.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    match = _DEVICE.fullmatch(name)
    if match is None:  # (torch knows more devices, e.g. mps, xpu, meta, but the model runs on CPUs and CUDA GPUs)
        raise CliError(f"--device {args.device!r} is not supported; use auto, cpu, cuda or cuda:N.")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CliError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu.")
        count = torch.cuda.device_count()
        if match.group("index") is not None and int(match.group("index")) >= count:
            raise CliError(
                f"--device {name} does not exist: this machine has {count} CUDA GPU(s), "
                f"so use cuda:0{f' to cuda:{count - 1}' if count > 1 else ''} (or cuda, the first)."
            )
    device = torch.device(name)
    dtype_name = args.dtype if args.dtype != "auto" else ("float16" if device.type == "cuda" else "float32")
    return device, getattr(torch, dtype_name)


def _save_png(image: Any, path: Path, metadata: dict[str, Any]) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("stylecodes", json.dumps(metadata, ensure_ascii=False))  # how to paint it again
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(path, format="PNG", pnginfo=info)
    except OSError as exc:
        raise CliError(f"Could not write {path}: {exc.strerror or exc}.") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
