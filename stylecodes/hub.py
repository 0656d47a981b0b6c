"""Finding a version's weights: a local path from the environment, or a Hub download on first use.

Downloads go through `huggingface_hub` (its cache, its tqdm progress bars, `HF_HUB_OFFLINE`, `HF_TOKEN`).
Any failure becomes a `ModelLoadError` whose one-line message says what was missing and how to point the
tool at local files instead. Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stylecodes.versions import ModelVersionSpec, local_path_help

# `owner/name`: how a Hub repo id looks (a local folder of that shape that exists wins).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

# The parts of an SD1.5 diffusers repo that the pipeline needs: fp32 safetensors weights and configs,
# not the multi-GB original-format checkpoints or the fp16/.bin duplicates stored beside them.
_BASE_MODEL_FILES = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "feature_extractor/*.json",
]
_IMAGE_ENCODER_FILES = ["config.json", "model.safetensors", "preprocessor_config.json"]


class ModelLoadError(RuntimeError):
    """The model's files could not be found, downloaded or read. The message says how to fix it."""


@dataclass(frozen=True)
class BaseModelSource:
    """An SD1.5 base: a diffusers folder, or a single-file checkpoint (`is_single_file`)."""

    path: Path
    is_single_file: bool
    label: str  # what the user configured, for metadata and messages


def resolve_checkpoint(spec: ModelVersionSpec) -> Path:
    """The control-module checkpoint (`.bin` or `.safetensors`) as a local file."""
    local = spec.local_paths().checkpoint
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"{spec.env_var('CHECKPOINT')}={local} is not a file. {local_path_help(spec)}")
        return path
    assert spec.checkpoint_repo and spec.checkpoint_file
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(spec.checkpoint_repo, spec.checkpoint_file))
    except Exception as exc:  # network, offline mode, gated repo, disk full: all become one clear message
        raise _download_error(spec, f"{spec.checkpoint_repo}/{spec.checkpoint_file}", exc) from exc


def resolve_base_model(spec: ModelVersionSpec) -> BaseModelSource:
    """The SD1.5 base: env override (folder, single file or another Hub id), else the spec's Hub id."""
    configured = spec.local_paths().base_model or spec.base_model
    assert configured is not None
    path = Path(configured).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                f"{spec.env_var('BASE_MODEL')}={configured} is a file but not a .safetensors or .ckpt checkpoint."
            )
        return BaseModelSource(path, is_single_file=True, label=configured)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{spec.env_var('BASE_MODEL')}={configured} is a folder without model_index.json; "
                "it must be a diffusers pipeline folder (StableDiffusionPipeline.save_pretrained)."
            )
        return BaseModelSource(path, is_single_file=False, label=configured)
    if not _HUB_ID.match(configured):
        raise ModelLoadError(f"{spec.env_var('BASE_MODEL')}={configured} does not exist. {local_path_help(spec)}")
    return BaseModelSource(_snapshot(spec, configured, _BASE_MODEL_FILES), is_single_file=False, label=configured)


def resolve_image_encoder(spec: ModelVersionSpec) -> Path:
    """The SigLIP vision tower as a local folder (`from_pretrained`-loadable)."""
    configured = spec.local_paths().image_encoder or spec.image_encoder
    assert configured is not None
    path = Path(configured).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec.env_var('IMAGE_ENCODER')}={configured} has no config.json; it must be a "
                f"SiglipVisionModel/SiglipModel folder (a save of {spec.image_encoder})."
            )
        return path
    if not _HUB_ID.match(configured):
        raise ModelLoadError(f"{spec.env_var('IMAGE_ENCODER')}={configured} does not exist. {local_path_help(spec)}")
    return _snapshot(spec, configured, _IMAGE_ENCODER_FILES)


def _snapshot(spec: ModelVersionSpec, repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # see resolve_checkpoint
        raise _download_error(spec, repo_id, exc) from exc


def _download_error(spec: ModelVersionSpec, what: str, exc: Exception) -> ModelLoadError:
    from huggingface_hub import constants

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if constants.HF_HUB_OFFLINE:
        situation = f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    else:
        situation = f"could not download {what} from the Hugging Face Hub ({type(exc).__name__}: {reason})"
    return ModelLoadError(f"Model version {spec.version}: {situation}. {local_path_help(spec)}")
