"""`stylecodes` command line: encode images to codes, paint with them, and inspect, mix or draw codes.

    stylecodes encode painting.jpg photo.png
    stylecodes imagine "a lighthouse at dusk" --code C_d_AAI_rQglIvUb1_fC1 --seed 7 --out lighthouse.png
    stylecodes decode C_d_AAI_rQglIvUb1_fC1
    stylecodes mix "C_d_AAI_rQglIvUb1_fC1::2 KDArLSITDi8AAD8hDwQ/Cwk/Li0::1"
    stylecodes random
    stylecodes forge ./my-images --out my-style.safetensors
    stylecodes imagine "a lighthouse at dusk" --lora my-style.safetensors
    stylecodes convert-checkpoint controlnet_model_11_80000.bin stylecodes_v1.safetensors
    stylecodes dataset my-set --count 35000
    stylecodes train --dataset my-set --output-dir runs/v2 --version 2
    stylecodes eval 0 2 --out eval

Every command takes --model-version (default 1, the published release; 0 is the offline demo model whose images
are only palettes and patterns), --device and --dtype. Errors are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from stylecodes.cli import checkpoints, codes, forge, paint, training
from stylecodes.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, CliError, common_options, one_line
from stylecodes.hub import ModelLoadError

# Errors caused by input or environment, reported in one line; anything else is a bug and keeps its traceback.
# (ValueError covers CodeError, ImageError, UnservedVersionError, CheckpointError and pipeline argument errors.)
USER_ERRORS: tuple[type[BaseException], ...] = (CliError, ValueError, ModelLoadError, OSError)
COMMAND_MODULES = (paint, forge, codes, checkpoints, training)  # each adds its subcommands, in this order in --help


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_option_values(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="stylecodes",
        description="Turn images into 21-character stylecodes and paint in their style (StyleCodes, SD1.5).",
        epilog="A code that starts with `-` is read as a code after --code; elsewhere put `--` before it, "
        "e.g. `stylecodes decode -- -AbC...`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(commands, common)
    return parser


def _attach_option_values(argv: list[str]) -> list[str]:
    """`--code -Abc...` -> `--code=-Abc...`: a code may start with `-`, which argparse would take for an option."""
    result: list[str] = []
    for index, item in enumerate(argv):
        if index > 0 and argv[index - 1] == "--code" and item.startswith("-") and result[-1] == "--code":
            result[-1] = f"--code={item}"
        else:
            result.append(item)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
