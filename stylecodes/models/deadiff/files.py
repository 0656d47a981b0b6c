"""The converted DEADiff file: safetensors with `DEADiffModel`'s config in its metadata (what `convert` writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import Tensor

from stylecodes.checkpoint import CheckpointError

CONFIG_METADATA_KEY = "deadiff_config"  # the converted file's metadata entry holding DEADiffModel's config


def read_converted(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config, state dict) of a file written by `convert_deadiff_checkpoint`."""
    if not path.is_file():
        raise CheckpointError(f"DEADiff weights not found: {path}.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state_dict = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"Could not read {path}: {error}. Convert `deadiff_v1.ckpt` again.") from error
    if CONFIG_METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path} is not a converted DEADiff file (no `deadiff_config` in its metadata); make one with "
            "`stylecodes convert-deadiff deadiff_v1.ckpt deadiff.safetensors`."
        )
    return json.loads(metadata[CONFIG_METADATA_KEY]), state_dict
