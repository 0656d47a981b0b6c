"""The encoder-version digit at the end of every stylecode selects a model: this is the one table of versions.

Torch-free, so the bot can check a code's version (and say which versions it serves) without loading a model.

Version 1 loads the published release from the Hugging Face Hub on first use (its checkpoint file is picked from the
repository's listing among `checkpoint_files`, see `stylecodes.hub`), or from local paths set in the environment for
sites without Hub access (see `LocalPaths`). Version 0 is a demo model built in-process from a fixed seed: no
download, instant, and its images are NOT meaningful (random weights).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEMO_VERSION = 0
DEMO_NOTICE = "version 0 is the demo model: tiny random weights, its images are not meaningful"
DEFAULT_VERSION = 1


@dataclass(frozen=True)
class ModelVersionSpec:
    """Where one encoder version's weights come from.

    `base_model` is a Hub id or, through the environment, a diffusers folder or a single-file `.safetensors`
    SD1.5 checkpoint; any SD1.5 fine-tune works because the control module only reads the UNet's features.
    """

    version: int
    title: str
    short_title: str  # for one-line messages, e.g. "serves version(s) 0 (demo, images not meaningful)"
    base_model: str | None  # Hub id of the SD1.5 base (None: built in-process)
    checkpoint_repo: str | None  # Hub repo holding the control module (incl. the autoencoder)
    # The names the checkpoint may have in that repo (matched anywhere in it); the one that is there is used.
    checkpoint_files: tuple[str, ...]
    image_encoder: str | None  # Hub id of the SigLIP vision tower
    autoencoder_prefix: str = "sref_autoencoder."  # the autoencoder's keys inside the checkpoint
    # Autoencoder settings that differ from StyleAutoencoder's defaults (which are the published release's), as
    # (name, value) pairs: `d_model`, `num_heads`, ... The input width always comes from the image encoder.
    autoencoder_overrides: tuple[tuple[str, int], ...] = ()
    # STYLECODES_V1_ -> STYLECODES_V1_BASE_MODEL, ..._CHECKPOINT, ..._CHECKPOINT_FILE, ..._REVISION, ..._IMAGE_ENCODER
    env_prefix: str | None = None

    @property
    def is_demo(self) -> bool:
        return self.version == DEMO_VERSION

    def local_paths(self, environ: Mapping[str, str] | None = None) -> LocalPaths:
        """The local overrides set in the environment (any may be unset, meaning: use the Hub)."""
        if self.env_prefix is None:
            return LocalPaths()
        env = os.environ if environ is None else environ

        def read(name: str) -> str | None:
            value = env.get(self.env_prefix + name, "").strip()
            return value or None

        return LocalPaths(
            base_model=read("BASE_MODEL"),
            checkpoint=read("CHECKPOINT"),
            image_encoder=read("IMAGE_ENCODER"),
            checkpoint_file=read("CHECKPOINT_FILE"),
            revision=read("REVISION"),
        )

    @property
    def autoencoder_config(self) -> dict[str, int]:
        return dict(self.autoencoder_overrides)

    def env_var(self, name: str) -> str:
        if self.env_prefix is None:
            raise ValueError(f"version {self.version} has no configurable paths")
        return self.env_prefix + name


@dataclass(frozen=True)
class LocalPaths:
    """Environment overrides. `base_model` may also be another Hub id (e.g. a fine-tune, or a moved repo).

    `checkpoint` is a local file and wins over the Hub; `checkpoint_file` names the file inside `checkpoint_repo`
    when the listing has none or several of the known names; `revision` (branch, tag or commit hash) pins the
    checkpoint repo's revision explicitly instead of the one recorded on first download.
    """

    base_model: str | None = None
    checkpoint: str | None = None
    image_encoder: str | None = None
    checkpoint_file: str | None = None
    revision: str | None = None


VERSIONS: dict[int, ModelVersionSpec] = {
    0: ModelVersionSpec(
        version=0,
        title=f"Demo model ({DEMO_NOTICE})",
        short_title="demo, images not meaningful",
        base_model=None,
        checkpoint_repo=None,
        checkpoint_files=(),
        image_encoder=None,
    ),
    1: ModelVersionSpec(
        version=1,
        title="StyleCodes v1 (the published release, Stable Diffusion 1.5)",
        short_title="StyleCodes v1",
        # runwayml/stable-diffusion-v1-5, which the published demo used, moved here.
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        checkpoint_repo="CiaraRowles/stylecodes",
        # The published demo scripts load `controlnet_model_11_80000.bin`; a public description of the repo names
        # `stylecodes_sd15_v1.bin` instead. Either, or a `.safetensors` of either, is accepted: the listing decides.
        checkpoint_files=(
            "controlnet_model_11_80000.bin",
            "controlnet_model_11_80000.safetensors",
            "stylecodes_sd15_v1.bin",
            "stylecodes_sd15_v1.safetensors",
        ),
        image_encoder="google/siglip-base-patch16-224",
        env_prefix="STYLECODES_V1_",
    ),
}


class UnservedVersionError(ValueError):
    """A code's version is not served here. The message names the versions that are."""

    def __init__(self, version: int, served: Iterable[int]) -> None:
        self.version = version
        self.served = sorted(set(served))
        names = ", ".join(f"{v} ({_short_title(v)})" for v in self.served) or "none"
        super().__init__(
            f"Stylecodes of version {version} are not served here; this service serves version(s) {names}. "
            f"Encode your image again to get a code of a served version."
        )


def get_spec(version: int) -> ModelVersionSpec:
    """The spec for `version`, or `UnservedVersionError` naming the versions that exist."""
    spec = VERSIONS.get(version)
    if spec is None:
        raise UnservedVersionError(version, VERSIONS)
    return spec


def check_served(version: int, served: Iterable[int]) -> None:
    served = list(served)
    if version not in served:
        raise UnservedVersionError(version, served)


def _short_title(version: int) -> str:
    spec = VERSIONS.get(version)
    return spec.short_title if spec else "unknown"


def local_path_help(spec: ModelVersionSpec) -> str:
    """How an offline site points version `spec.version` at local files (used in error messages and docs)."""
    return (
        f"To run without the Hugging Face Hub, download the files elsewhere and set "
        f"{spec.env_var('CHECKPOINT')}=/path/to/{spec.checkpoint_files[0]} (the file of {spec.checkpoint_repo}, or a "
        f"converted .safetensors), "
        f"{spec.env_var('BASE_MODEL')}=/path/to/sd15-folder-or-file.safetensors (a diffusers folder of "
        f"{spec.base_model} or any SD1.5 fine-tune) and {spec.env_var('IMAGE_ENCODER')}=/path/to/siglip-folder "
        f"(a save of {spec.image_encoder})."
    )
