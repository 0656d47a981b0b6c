"""Loading the control module's weights: the published `.bin` pickle, or `.safetensors`.

The release ships `controlnet_model_11_80000.bin`, a torch pickle holding `{"controlnet": state_dict}`. Pickles can
run code when loaded, so they are read with `torch.load(weights_only=True)`: plain tensors and containers only.
Anything needing more is refused; `convert_to_safetensors` turns a `.bin` into the safer, faster format once.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
WRAPPER_KEY = "controlnet"  # the published pickle nests the state dict under this key
# The control module's three parts, as its state dict names them: every tensor of a checkpoint is in one of them.
CONTROL_PREFIXES = ("sref_autoencoder.", "control_model.", "middle_block_out.")
_LISTED_KEYS = 5  # how many missing/unexpected keys an error message names
_TEXT_PROBE = 64  # bytes read to tell a text file from a checkpoint (every checkpoint format starts in binary)
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")  # what torch's safe unpickler refused


class CheckpointError(ValueError):
    """A checkpoint file could not be used. The message says which file, what is wrong and what to do."""


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a control-module state dict from `.bin` (published layout or bare) or `.safetensors`, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}.")
    suffix = path.suffix.lower()
    if suffix in (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES):
        _refuse_text(path)
    if suffix == SAFETENSORS_SUFFIX:
        state_dict = _load_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        state_dict = _load_pickle(path)
    else:
        raise CheckpointError(
            f"Unsupported checkpoint file type `{path.suffix or '(none)'}` for {path}; "
            f"expected `{SAFETENSORS_SUFFIX}` or a torch pickle ({', '.join(PICKLE_SUFFIXES)})."
        )
    return state_dict


def load_control_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into `model` with strict key and shape checking (values are cast to the model's dtype)."""
    state_dict = load_state_dict(path)
    check_state_dict(model, state_dict, source=str(path))
    model.load_state_dict(state_dict, strict=True)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str) -> None:
    """Raise `CheckpointError` naming a few missing/unexpected keys or mismatched shapes, if any."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s), e.g. {_some(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s), e.g. {_some(unexpected)}")
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}. "
            "Is it a StyleCodes control checkpoint built for this base model?"
        )
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
        for key, value in expected.items()
        if tuple(state_dict[key].shape) != tuple(value.shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: {len(mismatched)} tensor(s) have the wrong shape, "
            f"e.g. {_some(mismatched)}. Was it built for a different base model?"
        )


def check_control_parts(state_dict: Mapping[str, Tensor], *, source: str) -> None:
    """Raise `CheckpointError` unless every tensor belongs to one of the control module's parts and each part is there.

    The exact names and shapes depend on the base UNet (`check_state_dict` checks them against a built module); this
    needs no module and tells a StyleCodes checkpoint from any other tensor file.
    """
    parts = ", ".join(f"`{prefix}*`" for prefix in CONTROL_PREFIXES)
    foreign = [key for key in state_dict if not key.startswith(CONTROL_PREFIXES)]
    if foreign:
        raise CheckpointError(
            f"{source} is not a StyleCodes control checkpoint: {len(foreign)} of its {len(state_dict)} tensors are "
            f"outside the module's parts ({parts}), e.g. {_some(foreign)}."
        )
    missing = [f"`{prefix}*`" for prefix in CONTROL_PREFIXES if not any(key.startswith(prefix) for key in state_dict)]
    if missing:
        raise CheckpointError(
            f"{source} is not a complete StyleCodes control checkpoint: it has no {', '.join(missing)} tensors "
            f"(a full one has {parts})."
        )


def convert_to_safetensors(src: str | Path, dst: str | Path, *, expected: nn.Module | None = None) -> Path:
    """Convert a `.bin` checkpoint (published layout or bare state dict) to `.safetensors`; returns `dst`.

    Nothing is written unless the file is a StyleCodes control checkpoint (`check_control_parts`) and, when
    `expected` is given (e.g. the module built on the meta device), has exactly its keys and shapes.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"The converted checkpoint must end in `{SAFETENSORS_SUFFIX}`, got {dst}.")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"Refusing to overwrite the source checkpoint {src}.")
    state_dict = load_state_dict(src)
    check_control_parts(state_dict, source=str(src))
    if expected is not None:
        check_state_dict(expected, state_dict, source=str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(_without_shared_storage(state_dict), str(dst), metadata={"format": "pt", "converted_from": src.name})
    return dst


def _load_pickle(path: Path) -> dict[str, Tensor]:
    try:
        # Memory-map zip-format pickles (all recent torch.save files) so the 2.7 GB release is not copied twice.
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        needed = _UNSUPPORTED_GLOBAL.search(str(error))
        if needed is None:  # not a pickle at all, or a damaged one
            raise CheckpointError(
                f"Could not read {path}: the file is truncated or not a torch checkpoint "
                f"({_weights_unpickler_detail(error)}). Download it again."
            ) from error
        raise CheckpointError(
            f"Refusing to load {path}: the pickle contains more than tensors (it needs `{needed.group(1)}`). "
            "Loading it could run arbitrary code; use the published checkpoint or a `.safetensors` file."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"Could not read {path}: the file is truncated or not a torch checkpoint ({_first_line(error)}). "
            "Download it again."
        ) from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get(WRAPPER_KEY), Mapping):
        loaded = loaded[WRAPPER_KEY]
    return _as_tensor_dict(loaded, path)


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"Could not read {path}: the file is truncated or not a safetensors file ({_first_line(error)}). "
            "Download or convert it again."
        ) from error


def _as_tensor_dict(loaded: object, path: Path) -> dict[str, Tensor]:
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(
            f"{path} does not hold a state dict (got {type(loaded).__name__}); expected a mapping of names to "
            f"tensors, optionally under `{WRAPPER_KEY}`."
        )
    not_tensors = [str(key) for key, value in loaded.items() if not _is_named_tensor(key, value)]
    if not_tensors:
        raise CheckpointError(f"{path} holds entries that are not named tensors, e.g. {_some(not_tensors)}.")
    return dict(loaded)


def _is_named_tensor(key: object, value: object) -> bool:
    return isinstance(key, str) and isinstance(value, Tensor)


def _without_shared_storage(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share memory; give each its own contiguous copy only when needed."""
    seen: set[int] = set()
    result = {}
    for key, tensor in state_dict.items():
        pointer = tensor.untyped_storage().data_ptr()
        shared = pointer in seen and tensor.numel() > 0
        seen.add(pointer)
        result[key] = tensor.clone() if shared else tensor.contiguous()
    return result


def _some(items: list[str]) -> str:
    shown = ", ".join(f"`{item}`" for item in items[:_LISTED_KEYS])
    return shown + (", ..." if len(items) > _LISTED_KEYS else "")


def _weights_unpickler_detail(error: BaseException) -> str:
    """torch's message is long and advises re-running without safety; keep only what it could not read."""
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
    return match.group(1).strip()[:200] if match else _first_line(error)


def _refuse_text(path: Path) -> None:
    """Checkpoints are binary. A text file in their place is an LFS pointer or a saved error page: say which."""
    try:
        with open(path, "rb") as file:
            head = file.read(_TEXT_PROBE)
    except OSError as error:
        raise CheckpointError(f"Could not read {path}: {error.strerror or error}.") from error
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"{path} is a Git LFS pointer, not the checkpoint: it comes from a clone made without Git LFS. "
            "Download the file itself (`hf download`, or `git lfs pull` in the clone)."
        )
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        first_line = head.decode("ascii").strip().splitlines()[0][:60]
        raise CheckpointError(
            f"{path} is a text file, not a checkpoint (it begins `{first_line}`): probably an error page saved "
            "in its place. Download it again."
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
