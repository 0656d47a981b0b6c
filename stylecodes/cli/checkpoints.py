"""`stylecodes convert-checkpoint`: a published `.bin` checkpoint to `.safetensors`, checked first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stylecodes.cli.common import control_model_layout, version_option
from stylecodes.versions import DEFAULT_VERSION, get_spec


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    convert = commands.add_parser(
        "convert-checkpoint",
        parents=[common],
        help="convert a .bin control checkpoint to .safetensors (checked against --model-version's model first)",
    )
    convert.add_argument("src", type=Path, metavar="SRC")
    convert.add_argument("dst", type=Path, metavar="DST")
    convert.set_defaults(run=run_convert)

    deadiff = commands.add_parser(
        "convert-deadiff",
        help="convert DEADiff's deadiff_v1.ckpt (qth/DEADiff; personal, research and non-commercial use only) to the "
        ".safetensors file the deadiff style mode loads",
    )
    deadiff.add_argument("dst", type=Path, metavar="DST", help="the .safetensors file to write")
    deadiff.add_argument(
        "--checkpoint", type=Path, default=None, metavar="PATH",
        help="a local deadiff_v1.ckpt (default: download it from the Hugging Face Hub, 7.43 GB)",
    )
    deadiff.set_defaults(run=run_convert_deadiff)


def run_convert(args: argparse.Namespace) -> int:
    from stylecodes.checkpoint import convert_to_safetensors

    spec = get_spec(version_option(args, default=DEFAULT_VERSION))
    print(convert_to_safetensors(args.src, args.dst, expected=control_model_layout(spec)))
    return 0


def run_convert_deadiff(args: argparse.Namespace) -> int:
    from stylecodes.models.deadiff.convert import LICENCE_NOTE, convert_deadiff_checkpoint, download_release

    print(LICENCE_NOTE)
    source = args.checkpoint if args.checkpoint is not None else download_release()
    for note in convert_deadiff_checkpoint(source, args.dst):
        print(note)
    print(args.dst)
    return 0


# -------------------------------------------------------------------------------------------------------- helpers
