"""`stylecodes decode`, `mix` and `random`: working with codes as text, no model needed."""

from __future__ import annotations

import argparse
from typing import Any

from stylecodes.cli.common import CliError, check_version_option, version_option
from stylecodes.codec import LEGACY_VERSION, mix, parse_code
from stylecodes.versions import DEFAULT_VERSION, get_spec


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    decode = commands.add_parser("decode", parents=[common], help="show a code's version, both forms and levels")
    decode.add_argument("code", metavar="CODE")
    decode.set_defaults(run=run_decode)

    mixer = commands.add_parser("mix", parents=[common], help='mix codes: "A::2 B::1" (weighted mean)')
    mixer.add_argument("mix", metavar="MIX")
    mixer.set_defaults(run=run_mix)

    rand = commands.add_parser(
        "random", parents=[common], help="print a random code, drawn from the version's learned prior of real codes"
    )
    rand.add_argument("--seed", type=int, default=None, help="seed for a reproducible random code")
    rand.add_argument("--count", type=int, default=1, help="how many codes (default 1)")
    rand.add_argument("--uniform", action="store_true", help="every level equally likely (no learned prior)")
    rand.set_defaults(run=run_random)


def run_decode(args: argparse.Namespace) -> int:
    code = parse_code(args.code)
    check_version_option(args, code)
    spec = get_spec(code.version)
    print(f"version:   {code.version} ({spec.title})")
    if spec.fingerprint is not None:
        print(f"model:     fingerprint {spec.short_fingerprint} ({spec.fingerprint})")
    print(f"canonical: {code.canonical}")
    no_legacy = f"(none: only version-{LEGACY_VERSION} codes have a legacy form)"
    print(f"legacy:    {code.legacy if code.version == LEGACY_VERSION else no_legacy}")
    print(f"levels:    {' '.join(str(level) for level in code.levels)}")
    return 0


def run_mix(args: argparse.Namespace) -> int:
    code = mix(args.mix)
    check_version_option(args, code)
    print(code.canonical)
    return 0


def run_random(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from stylecodes.prior import has_prior, sample_codes

    version = version_option(args, default=DEFAULT_VERSION)
    if args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}.")
    uniform = args.uniform
    if not uniform and not has_prior(version):
        print(f"note: version {version} ships no learned prior; these codes are uniform random.", file=sys.stderr)
        uniform = True
    for code in sample_codes(version, args.count, np.random.default_rng(args.seed), uniform=uniform):
        print(code.canonical)
    return 0
