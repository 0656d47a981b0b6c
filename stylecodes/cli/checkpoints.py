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


def run_convert(args: argparse.Namespace) -> int:
    from stylecodes.checkpoint import convert_to_safetensors

    spec = get_spec(version_option(args, default=DEFAULT_VERSION))
    print(convert_to_safetensors(args.src, args.dst, expected=control_model_layout(spec)))
    return 0


# -------------------------------------------------------------------------------------------------------- helpers
