"""The version table, unserved versions, and where version 1's files come from (env paths, Hub, offline)."""

from __future__ import annotations

import pytest

from stylecodes import hub
from stylecodes.codec import CodeError, StyleCode
from stylecodes.engine import StyleEngine
from stylecodes.loaders import load_style_image_encoder
from stylecodes.versions import VERSIONS, UnservedVersionError, check_served, get_spec


def test_the_codec_accepts_exactly_the_versions_in_the_table():
    for version, spec in VERSIONS.items():
        assert spec.version == version
        assert StyleCode((0,) * 20, version).version == version
    for version in set(range(10)) - set(VERSIONS):
        with pytest.raises(CodeError):
            StyleCode((0,) * 20, version)


def test_published_version_points_at_the_release():
    spec = VERSIONS[1]
    assert spec.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert spec.checkpoint_repo == "CiaraRowles/stylecodes"
    assert spec.checkpoint_files == (
        "controlnet_model_11_80000.bin",
        "controlnet_model_11_80000.safetensors",
        "stylecodes_sd15_v1.bin",
        "stylecodes_sd15_v1.safetensors",
    )
    assert spec.image_encoder == "google/siglip-base-patch16-224"
    assert spec.autoencoder_prefix == "sref_autoencoder."
    assert not spec.is_demo


def test_demo_version_says_what_it_was_trained_on():
    spec = VERSIONS[0]
    assert spec.is_demo and spec.checkpoint_repo is None
    assert "procedural" in spec.title
    assert "procedural" in spec.short_title


def test_unserved_version_names_the_served_ones():
    check_served(1, [0, 1])
    with pytest.raises(UnservedVersionError) as caught:
        check_served(1, [0])
    assert caught.value.served == [0]
    assert "version 1 are not served" in str(caught.value) and "0 (demo" in str(caught.value)
    with pytest.raises(UnservedVersionError, match=r"serves version\(s\) 0 .*1 "):
        get_spec(7)


def test_unserved_version_cannot_be_loaded():
    with pytest.raises(UnservedVersionError, match=r"version 5"):
        StyleEngine.load(5)


def test_local_paths_come_from_the_environment():
    spec = VERSIONS[1]
    env = {
        "STYLECODES_V1_BASE_MODEL": "/models/sd15",
        "STYLECODES_V1_CHECKPOINT": " /models/stylecodes.safetensors ",
        "STYLECODES_V1_IMAGE_ENCODER": "",
        "STYLECODES_V1_CHECKPOINT_FILE": "stylecodes_sd15_v1.bin",
        "STYLECODES_V1_REVISION": "v1.0",
    }
    paths = spec.local_paths(env)
    assert (paths.checkpoint_file, paths.revision) == ("stylecodes_sd15_v1.bin", "v1.0")
    assert paths.base_model == "/models/sd15"
    assert paths.checkpoint == "/models/stylecodes.safetensors"
    assert paths.image_encoder is None  # empty means unset: use the Hub
    assert VERSIONS[0].local_paths(env).checkpoint is None  # the demo has nothing to configure


def test_env_checkpoint_path_is_used_and_checked(monkeypatch, tmp_path):
    spec = VERSIONS[1]
    checkpoint = tmp_path / "control.safetensors"
    checkpoint.write_bytes(b"x")
    monkeypatch.setenv("STYLECODES_V1_CHECKPOINT", str(checkpoint))
    resolved = hub.resolve_checkpoint(spec)
    assert (resolved.path, resolved.repo, resolved.revision) == (checkpoint, None, None)
    assert resolved.source == str(checkpoint)
    monkeypatch.setenv("STYLECODES_V1_CHECKPOINT", str(tmp_path / "missing.bin"))
    with pytest.raises(hub.ModelLoadError, match=r"STYLECODES_V1_CHECKPOINT=.*missing.bin is not a file"):
        hub.resolve_checkpoint(spec)


def test_env_base_model_folder_file_and_hub_id(monkeypatch, tmp_path, offline_hub):
    spec = VERSIONS[1]
    folder = tmp_path / "sd15"
    folder.mkdir()
    monkeypatch.setenv("STYLECODES_V1_BASE_MODEL", str(folder))
    with pytest.raises(hub.ModelLoadError, match=r"without model_index.json"):
        hub.resolve_base_model(spec)
    (folder / "model_index.json").write_text("{}")
    source = hub.resolve_base_model(spec)
    assert (source.path, source.is_single_file) == (folder, False)

    single = tmp_path / "dreamshaper_8.safetensors"
    single.write_bytes(b"x")
    monkeypatch.setenv("STYLECODES_V1_BASE_MODEL", str(single))
    assert hub.resolve_base_model(spec).is_single_file

    other = tmp_path / "notes.txt"
    other.write_text("x")
    monkeypatch.setenv("STYLECODES_V1_BASE_MODEL", str(other))
    with pytest.raises(hub.ModelLoadError, match=r"not a .safetensors or .ckpt"):
        hub.resolve_base_model(spec)

    monkeypatch.setenv("STYLECODES_V1_BASE_MODEL", str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(hub.ModelLoadError, match=r"does not exist"):
        hub.resolve_base_model(spec)

    # Another Hub id (e.g. a fine-tune) is fetched from the Hub: offline and uncached, that fails clearly.
    monkeypatch.setenv("STYLECODES_V1_BASE_MODEL", "someone/sd15-finetune")
    with pytest.raises(hub.ModelLoadError, match=r"someone/sd15-finetune is not in the local Hugging Face cache"):
        hub.resolve_base_model(spec)


def test_env_image_encoder_folder_is_checked(monkeypatch, tmp_path):
    folder = tmp_path / "siglip"
    folder.mkdir()
    monkeypatch.setenv("STYLECODES_V1_IMAGE_ENCODER", str(folder))
    with pytest.raises(hub.ModelLoadError, match=r"has no config.json"):
        hub.resolve_image_encoder(VERSIONS[1])
    (folder / "config.json").write_text("{}")
    assert hub.resolve_image_encoder(VERSIONS[1]) == folder


def test_offline_without_cache_says_how_to_use_local_paths(offline_hub):
    with pytest.raises(hub.ModelLoadError) as caught:
        StyleEngine.load(1)
    message = str(caught.value)
    assert "CiaraRowles/stylecodes is not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message
    for variable in ("STYLECODES_V1_CHECKPOINT", "STYLECODES_V1_BASE_MODEL", "STYLECODES_V1_IMAGE_ENCODER"):
        assert variable in message


def test_offline_encoder_without_cache_fails_clearly(offline_hub, monkeypatch, tmp_path):
    checkpoint = tmp_path / "control.safetensors"
    checkpoint.write_bytes(b"x")
    monkeypatch.setenv("STYLECODES_V1_CHECKPOINT", str(checkpoint))  # found locally: now SigLIP is missing
    with pytest.raises(hub.ModelLoadError, match=r"google/siglip-base-patch16-224 is not in the local"):
        load_style_image_encoder(VERSIONS[1])


def test_broken_local_folders_give_model_load_errors(tmp_path):
    from stylecodes.loaders import load_base_components
    from stylecodes.models.image_encoder import load_vision_model

    siglip = tmp_path / "siglip"
    siglip.mkdir()
    (siglip / "config.json").write_text("{}")
    with pytest.raises(hub.ModelLoadError, match=r"Could not load the SigLIP image encoder"):
        load_vision_model(siglip)
    base = tmp_path / "sd15"
    base.mkdir()
    (base / "model_index.json").write_text("{}")
    with pytest.raises(hub.ModelLoadError, match=r"Could not load the SD1\.5 base model from my-sd15"):
        load_base_components(hub.BaseModelSource(base, is_single_file=False, label="my-sd15"))
