"""What every `stylecodes` command shares: the common options, device and dtype, errors, writing PNGs."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from stylecodes.codec import StyleCode
from stylecodes.versions import ModelVersionSpec, get_spec

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
_DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"cpu|cuda(?::(?P<index>\d+))?")  # what --device accepts (besides auto)


class CliError(Exception):
    """A user mistake the command line reports in one line."""


def common_options() -> argparse.ArgumentParser:
    """The options every command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model-version",
        type=int,
        default=None,
        metavar="N",
        help="model version: 1 = published StyleCodes v1 (default; for `imagine --code` the code's own version), "
        "0 = demo model (tiny, trained on procedural palettes and patterns), 2-9 = trained model folders",
    )
    common.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    common.add_argument(
        "--dtype",
        default="auto",
        choices=_DTYPES,
        help="painting precision: auto = float16 on CUDA, float32 on CPU (encoding images always runs in float32)",
    )
    return common


def version_option(args: argparse.Namespace, *, default: int) -> int:
    version = default if args.model_version is None else args.model_version
    get_spec(version)  # UnservedVersionError names the versions that exist
    return version


def check_version_option(args: argparse.Namespace, code: StyleCode) -> None:
    if args.model_version is not None and args.model_version != code.version:
        raise CliError(f"The code is version {code.version} but --model-version is {args.model_version}.")


def control_model_layout(spec: ModelVersionSpec) -> Any:
    """The control module that version `spec` loads, without real weights: the keys and shapes a checkpoint needs."""
    if spec.folder is not None:  # a model-version folder records its layout in its control config
        from stylecodes.models.control import StyleCodesControlModel
        from stylecodes.training.export import CONTROL_FOLDER

        config = StyleCodesControlModel.load_config(Path(spec.folder) / CONTROL_FOLDER)
        import torch

        with torch.device("meta"):
            return StyleCodesControlModel.from_config(config)
    import torch

    from stylecodes.models.control import StyleCodesControlModel
    from stylecodes.models.sd15 import SD15_UNET_CONFIG

    with torch.device("meta"):  # every published version is built on SD1.5: 675M parameters, none allocated
        return StyleCodesControlModel.from_unet_config(SD15_UNET_CONFIG, **spec.autoencoder_config)


def device_and_dtype(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Library chatter (deprecations, backend fallbacks) is not for CLI users; progress bars stay on.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # per-tensor "Loading weights" bars; downloads keep theirs
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


def save_png(image: Any, path: Path, metadata: dict[str, Any]) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("stylecodes", json.dumps(metadata, ensure_ascii=False))  # how to paint it again
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(path, format="PNG", pnginfo=info)
    except OSError as exc:
        raise CliError(f"Could not write {path}: {exc.strerror or exc}.") from None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
