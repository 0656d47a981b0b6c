"""A trained model as a self-describing model-version folder: weights plus `manifest.json`, no code change.

    my-model/manifest.json      version digit, title, base model, image encoder, autoencoder and training
                                settings, sha256 fingerprint of everything else in the folder
    my-model/control/           the control module with its style autoencoder (diffusers save_pretrained)
    my-model/prior.json         the learned prior for random codes (`stylecodes.prior`)
    my-model/base/, image_encoder/   only when the model ships its own base / image encoder (the demo does)

Serve it with `STYLECODES_MODEL_PATHS=/path/to/my-model` (or a Hub repo id holding the same files).
The fingerprint lets two deployments tell their "version 2"s apart (see docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from stylecodes.models.control import AUTOENCODER_SETTINGS, StyleCodesControlModel
from stylecodes.versions import MANIFEST_FILE, MANIFEST_FORMAT, read_manifest

CONTROL_FOLDER = "control"
PRIOR_FILE = "prior.json"


def fingerprint(folder: Path) -> str:
    """sha256 over every file of the folder except the manifest, in sorted path order (path and content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def export_version(
    control_model: StyleCodesControlModel,
    folder: Path,
    *,
    version: int,
    title: str,
    base_model: str,
    image_encoder: str,
    training: dict[str, Any],
    short_title: str | None = None,
    prior: dict[str, Any] | None = None,
    extra_folders: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Write `folder` (replacing it atomically: a half-written export never looks complete). Returns the manifest.

    `base_model` / `image_encoder` are Hub ids or folders; `extra_folders` ({"base": path, ...}) are copied into the
    version folder, and an entry equal to one of their names then points inside it.
    """
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    control_model.save_pretrained(staging / CONTROL_FOLDER, safe_serialization=True)
    for name, source in (extra_folders or {}).items():
        shutil.copytree(source, staging / name)
    if prior is not None:
        (staging / PRIOR_FILE).write_text(json.dumps(prior))
    config = control_model.config
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "title": title,
        "short_title": short_title or title,
        "base_model": base_model,
        "image_encoder": image_encoder,
        "control": CONTROL_FOLDER,
        "prior": PRIOR_FILE if prior is not None else None,
        # the autoencoder's settings that the loader passes on (its input width comes from the image encoder)
        "autoencoder": {k: config[k] for k in AUTOENCODER_SETTINGS if k != "autoencoder_input_dim"},
        "training": training,
        "fingerprint": fingerprint(staging),
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    read_manifest(staging)  # what the version table will read must parse
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old)
    else:
        os.replace(staging, folder)
    return manifest


def check_fingerprint(folder: Path, expected: str) -> None:
    """Raise ValueError when the folder's files no longer match the fingerprint in its manifest."""
    actual = fingerprint(folder)
    if actual != expected:
        raise ValueError(
            f"The weights in {folder} do not match the fingerprint in its {MANIFEST_FILE} ({expected[:19]}..., "
            f"found {actual[:19]}...): a file was changed or is incomplete. Copy or export the model again."
        )
