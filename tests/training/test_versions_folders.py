"""Model-version folders: manifest, registration from STYLECODES_MODEL_PATHS, digit clashes, fingerprints."""

from __future__ import annotations

import json
import shutil

import pytest

from stylecodes import versions
from stylecodes.versions import (
    DEMO_FOLDER,
    MANIFEST_FILE,
    VersionFolderError,
    model_path_entries,
    read_manifest,
    register_folders,
    spec_from_folder,
)


@pytest.fixture
def demo_copy(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(DEMO_FOLDER, folder)
    return folder


def set_manifest(folder, **changes):
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_the_demo_is_a_version_folder_shipped_in_the_package():
    manifest = read_manifest(DEMO_FOLDER)
    spec = versions.VERSIONS[0]
    assert spec.folder == str(DEMO_FOLDER.resolve()) and spec.fingerprint == manifest["fingerprint"]
    assert spec.base_model == str(DEMO_FOLDER.resolve() / "base")  # shipped inside: resolved to the folder
    assert manifest["training"]["steps"] > 0 and "config" in manifest["training"]
    assert len(spec.short_fingerprint) == 12
    size = sum(p.stat().st_size for p in DEMO_FOLDER.rglob("*") if p.is_file())
    assert size < 21 * 1024 * 1024  # small enough to commit and to ship in the wheel


def test_folders_register_under_their_own_digit_and_clashes_are_refused(demo_copy):
    set_manifest(demo_copy, version=6, title="Six")
    table = dict(versions.VERSIONS)
    register_folders([str(demo_copy)], table)
    assert table[6].title == "Six" and table[6].folder == str(demo_copy.resolve())
    with pytest.raises(VersionFolderError, match=r"version 6, which is already 'Six'"):
        register_folders([str(demo_copy)], table)
    set_manifest(demo_copy, version=12)
    with pytest.raises(VersionFolderError, match="one digit"):
        spec_from_folder(demo_copy)


def test_bad_folders_say_what_is_wrong(tmp_path, demo_copy):
    with pytest.raises(VersionFolderError, match=r"no manifest\.json"):
        spec_from_folder(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(VersionFolderError, match="could not be read as JSON"):
        spec_from_folder(tmp_path)
    set_manifest(demo_copy, fingerprint=None)
    with pytest.raises(VersionFolderError, match="lacks `fingerprint`"):
        spec_from_folder(demo_copy)


def test_model_paths_setting_takes_commas_and_path_separators():
    assert model_path_entries({"STYLECODES_MODEL_PATHS": " a, b:c ,"}) == ["a", "b", "c"]
    assert model_path_entries({}) == []


def test_changed_weights_do_not_load_silently(demo_copy, monkeypatch):
    from stylecodes.engine import StyleEngine

    set_manifest(demo_copy, version=6)
    monkeypatch.setitem(versions.VERSIONS, 6, spec_from_folder(demo_copy))
    prior = demo_copy / "prior.json"
    prior.write_text(prior.read_text().replace("]", " ]", 1))
    with pytest.raises(ValueError, match="do not match the fingerprint"):
        StyleEngine.load(6)
