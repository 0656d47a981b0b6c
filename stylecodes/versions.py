"""The encoder-version digit at the end of every stylecode selects a model: this is the one table of versions.

Torch-free, so the bot can check a code's version (and say which versions it serves) without loading a model.

Version 1 loads the published release from the Hugging Face Hub on first use (its checkpoint file is picked from the
repository's listing among `checkpoint_files`, see `stylecodes.hub`), or from local paths set in the environment for
sites without Hub access (see `LocalPaths`). Every other version is a *model-version folder*
(`stylecodes train` writes them): weights plus a `manifest.json` that names the version digit, title, base model,
image encoder, autoencoder and training settings and a sha256 fingerprint of the weights. Version 0, the demo, is
such a folder shipped inside the package; `STYLECODES_MODEL_PATHS` (folders or Hub repo ids, separated by commas)
adds more at import time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEMO_VERSION = 0
DEMO_NOTICE = (
    "the demo model (version 0), tiny and trained only on procedural palettes and patterns; "
    "its pictures do not follow the code yet"
)
DEFAULT_VERSION = 1
MODEL_PATHS_ENV = "STYLECODES_MODEL_PATHS"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "stylecodes-version/1"
DEMO_FOLDER = Path(__file__).parent / "demo" / "weights"  # package data: the trained demo model
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
    checkpoint_files: tuple[str, ...]  # the names a version's checkpoint may have in `checkpoint_repo`
    image_encoder: str | None  # Hub id of the SigLIP vision tower
    autoencoder_prefix: str = "sref_autoencoder."  # the autoencoder's keys inside the checkpoint
    # Autoencoder settings that differ from StyleAutoencoder's defaults (which are the published release's), as
    # (name, value) pairs: `d_model`, `num_heads`, ... The input width always comes from the image encoder.
    autoencoder_overrides: tuple[tuple[str, int], ...] = ()
    # STYLECODES_V1_ -> STYLECODES_V1_BASE_MODEL, ..._CHECKPOINT, ..._CHECKPOINT_FILE, ..._REVISION, ..._IMAGE_ENCODER
    env_prefix: str | None = None
    folder: str | None = None  # a model-version folder (local path) holding manifest.json and the weights
    fingerprint: str | None = None  # "sha256:..." of the folder's weights, from its manifest

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
    def short_fingerprint(self) -> str | None:
        """The first 12 hex digits of the fingerprint, as shown to users (None for the published release)."""
        return None if self.fingerprint is None else self.fingerprint.removeprefix("sha256:")[:12]

    @property
    def autoencoder_config(self) -> dict[str, int]:
        return dict(self.autoencoder_overrides)

    def setting(self, name: str) -> str:
        """Where a path was configured, for messages: the environment variable, or the folder's manifest entry."""
        if self.env_prefix is not None:
            return self.env_prefix + name
        if self.folder is not None:
            return f"`{name.lower()}` in {Path(self.folder) / MANIFEST_FILE}"
        return f"`{name.lower()}`"

    def env_var(self, name: str) -> str:
        if self.env_prefix is None:
            raise ValueError(f"version {self.version} has no configurable paths")
        return self.env_prefix + name


@dataclass(frozen=True)
class LocalPaths:
    """Environment overrides. `base_model` may also be another Hub id (e.g. a fine-tune, or a moved repo)."""

    base_model: str | None = None
    checkpoint: str | None = None
    image_encoder: str | None = None
    checkpoint_file: str | None = None  # which file of the repo is the checkpoint, when it has several
    revision: str | None = None  # the repo's branch, tag or commit to read (default: the pinned commit)


class VersionFolderError(ValueError):
    """A model-version folder (or Hub repo) could not be registered. The message says which and why."""


def read_manifest(folder: str | Path) -> dict:
    """The parsed `manifest.json` of a model-version folder (VersionFolderError when missing or malformed)."""
    path = Path(folder).expanduser() / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VersionFolderError(
            f"{folder} is not a model-version folder: it has no {MANIFEST_FILE} (`stylecodes train` writes one)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VersionFolderError(f"{path} could not be read as JSON: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise VersionFolderError(f"{path} is not a StyleCodes manifest (its `format` is not {MANIFEST_FORMAT!r}).")
    for key, kind in (("version", int), ("title", str), ("base_model", str), ("image_encoder", str),
                      ("control", str), ("fingerprint", str)):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise VersionFolderError(f"{path} lacks `{key}` ({kind.__name__}); export the model again.")
    if not 0 <= manifest["version"] <= 9:
        raise VersionFolderError(f"{path} names version {manifest['version']}; a version is one digit, 0-9.")
    return manifest


def spec_from_folder(folder: str | Path) -> ModelVersionSpec:
    """The spec of a model-version folder, from its manifest (torch-free: no weight is read)."""
    manifest = read_manifest(folder)
    title = manifest["title"]
    root = Path(folder).expanduser().resolve()

    def inside(value: str) -> str:  # an entry naming a sub-folder of the version folder -> its absolute path
        return str(root / value) if (root / value).exists() else value

    return ModelVersionSpec(
        version=manifest["version"],
        title=title,
        short_title=manifest.get("short_title") or title,
        base_model=inside(manifest["base_model"]),
        checkpoint_repo=None,
        checkpoint_files=(),
        image_encoder=inside(manifest["image_encoder"]),
        autoencoder_overrides=tuple(sorted((k, int(v)) for k, v in manifest.get("autoencoder", {}).items())),
        folder=str(root),
        fingerprint=manifest["fingerprint"],
    )


def locate_folder(entry: str) -> Path:
    """A `STYLECODES_MODEL_PATHS` entry -> a local folder: the path itself, or a Hub repo's snapshot (cached)."""
    path = Path(entry).expanduser()
    if path.is_dir() or not _HUB_ID.match(entry):
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(entry))
    except Exception as exc:  # offline, missing repo, network: one message naming the setting
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VersionFolderError(f"{MODEL_PATHS_ENV}: could not get the Hub repo {entry!r}: {reason}") from exc


def register_folders(entries: Iterable[str], table: dict[int, ModelVersionSpec]) -> None:
    """Add the model-version folders in `entries` to `table`; two models claiming one digit is an error."""
    for entry in entries:
        spec = spec_from_folder(locate_folder(entry))
        taken = table.get(spec.version)
        if taken is not None:
            raise VersionFolderError(
                f"{MODEL_PATHS_ENV}: {entry} is version {spec.version}, which is already {taken.title!r}"
                f"{f' ({taken.folder})' if taken.folder else ''}. Export it with another version digit."
            )
        table[spec.version] = spec


def model_path_entries(environ: Mapping[str, str] | None = None) -> list[str]:
    value = (os.environ if environ is None else environ).get(MODEL_PATHS_ENV, "")
    return [item.strip() for item in value.replace(os.pathsep, ",").split(",") if item.strip()]


PUBLISHED_V1 = ModelVersionSpec(
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
)


def _build_table() -> dict[int, ModelVersionSpec]:
    table = {1: PUBLISHED_V1}
    if (DEMO_FOLDER / MANIFEST_FILE).is_file():  # (absent only in a source tree whose demo is being re-trained)
        register_folders([str(DEMO_FOLDER)], table)
    register_folders(model_path_entries(), table)
    return dict(sorted(table.items()))


VERSIONS: dict[int, ModelVersionSpec] = _build_table()


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
    if spec.env_prefix is None:
        return (
            f"Version {spec.version}'s manifest names base model {spec.base_model} and image encoder "
            f"{spec.image_encoder}; put their folders inside the version folder under those names, or download "
            "them into the Hugging Face cache."
        )
    return (
        f"To run without the Hugging Face Hub, download the files elsewhere and set "
        f"{spec.env_var('CHECKPOINT')}=/path/to/{spec.checkpoint_files[0]} (the file of {spec.checkpoint_repo}, or a "
        f"converted .safetensors), "
        f"{spec.env_var('BASE_MODEL')}=/path/to/sd15-folder-or-file.safetensors (a diffusers folder of "
        f"{spec.base_model} or any SD1.5 fine-tune) and {spec.env_var('IMAGE_ENCODER')}=/path/to/siglip-folder "
        f"(a save of {spec.image_encoder})."
    )
