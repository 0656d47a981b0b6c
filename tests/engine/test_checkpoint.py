"""Checkpoint files: the published `.bin` layout, `.safetensors`, conversion, and every way a file can be wrong."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from stylecodes.checkpoint import CheckpointError, convert_to_safetensors, load_control_weights, load_state_dict
from stylecodes.models.control import StyleCodesControlModel


@pytest.fixture(scope="module")
def tiny_config(reference_dir) -> dict:
    folder = reference_dir / "golden_tiny"
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    auto = json.loads((folder / "golden.json").read_text())["autoencoder"]
    return {
        "unet_config": unet_config,
        "autoencoder_input_dim": auto["input_dim"],
        "d_model": auto["d_model"],
        "num_heads": auto["num_heads"],
    }


def _build(config: dict, seed: int) -> StyleCodesControlModel:
    torch.manual_seed(seed)
    return StyleCodesControlModel.from_unet_config(
        config["unet_config"],
        autoencoder_input_dim=config["autoencoder_input_dim"],
        d_model=config["d_model"],
        num_heads=config["num_heads"],
    )


def _assert_same_weights(model: torch.nn.Module, other: torch.nn.Module) -> None:
    ours, theirs = model.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name


@pytest.fixture()
def published_bin(tmp_path, tiny_config):
    """A tiny model saved like the release: a torch pickle of {"controlnet": state_dict}."""
    source = _build(tiny_config, seed=1)
    path = tmp_path / "controlnet_model_11_80000.bin"
    torch.save({"controlnet": source.state_dict()}, path)
    return source, path


def test_published_bin_layout_loads_strictly(published_bin, tiny_config):
    source, path = published_bin
    target = _build(tiny_config, seed=2)
    assert not torch.equal(target.sref_autoencoder.latent_init, source.sref_autoencoder.latent_init)
    load_control_weights(target, path)
    _assert_same_weights(target, source)


def test_bare_state_dict_bin_loads_too(tmp_path, tiny_config):
    source = _build(tiny_config, seed=3)
    path = tmp_path / "bare.pt"
    torch.save(source.state_dict(), path)
    assert load_state_dict(path).keys() == source.state_dict().keys()


def test_legacy_non_zip_pickle_loads_too(tmp_path, tiny_config):
    source = _build(tiny_config, seed=7)
    path = tmp_path / "legacy.bin"
    torch.save({"controlnet": source.state_dict()}, path, _use_new_zipfile_serialization=False)
    target = _build(tiny_config, seed=8)
    load_control_weights(target, path)
    _assert_same_weights(target, source)


def test_convert_round_trip(published_bin, tmp_path, tiny_config):
    source, path = published_bin
    converted = convert_to_safetensors(path, tmp_path / "out" / "stylecodes.safetensors")
    assert converted == tmp_path / "out" / "stylecodes.safetensors" and converted.is_file()
    target = _build(tiny_config, seed=4)
    load_control_weights(target, converted)
    _assert_same_weights(target, source)
    assert load_state_dict(converted).keys() == load_state_dict(path).keys()


@pytest.mark.parametrize(
    ("state_dict", "message"),
    [
        ({"foo": torch.zeros(2)}, r"not a StyleCodes control checkpoint: 1 of its 1 tensors are outside.*`foo`"),
        (
            {"sref_autoencoder.input_proj.weight": torch.zeros(2), "unet.conv_in.weight": torch.zeros(2)},
            r"1 of its 2 tensors are outside the module's parts.*`unet\.conv_in\.weight`",
        ),
        ({"sref_autoencoder.input_proj.weight": torch.zeros(2)}, r"no `control_model\.\*`, `middle_block_out\.\*`"),
    ],
)
def test_convert_refuses_files_that_are_not_control_checkpoints(tmp_path, state_dict, message):
    src, dst = tmp_path / "other.bin", tmp_path / "out.safetensors"
    torch.save(state_dict, src)
    with pytest.raises(CheckpointError, match=message):
        convert_to_safetensors(src, dst)
    assert not dst.exists()  # checked before anything is written


def test_convert_checks_keys_and_shapes_against_the_expected_module(published_bin, tmp_path, tiny_config):
    _, path = published_bin
    with torch.device("meta"):  # keys and shapes only
        other = StyleCodesControlModel.from_unet_config(
            {**tiny_config["unet_config"], "block_out_channels": (32, 32, 64, 128)},
            autoencoder_input_dim=tiny_config["autoencoder_input_dim"],
            d_model=tiny_config["d_model"],
            num_heads=tiny_config["num_heads"],
        )
    with pytest.raises(CheckpointError, match=r"wrong shape"):
        convert_to_safetensors(path, tmp_path / "out.safetensors", expected=other)
    assert not (tmp_path / "out.safetensors").exists()
    expected = _build(tiny_config, seed=9)
    assert convert_to_safetensors(path, tmp_path / "ok.safetensors", expected=expected).is_file()


def test_convert_needs_a_safetensors_destination(published_bin, tmp_path):
    _, path = published_bin
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        convert_to_safetensors(path, tmp_path / "out.bin")


class _NotATensor:
    def __init__(self) -> None:
        self.payload = "anything"


def test_pickle_needing_more_than_tensors_is_refused(tmp_path):
    path = tmp_path / "custom.bin"
    torch.save({"controlnet": {"weight": torch.ones(2)}, "extra": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="more than tensors") as error:
        load_state_dict(path)
    assert "_NotATensor" in str(error.value)
    assert isinstance(error.value.__cause__, pickle.UnpicklingError)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "absent.bin")


def test_wrong_extension(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"Unsupported checkpoint file type `\.txt`"):
        load_state_dict(path)


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"whole{suffix}"
    tensors = {"weight": torch.randn(64, 64)}
    if suffix == ".bin":
        torch.save({"controlnet": tensors}, path)
    else:
        save_file(tensors, path)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(truncated)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 2700000000\n", "is a Git LFS pointer"),
        (b"<html><body>502 Bad Gateway</body></html>", r"is a text file, not a checkpoint \(it begins `<html>"),
        (b"\x80\x02\xff\xfe binary but not a pickle", r"truncated or not a torch checkpoint \(Unsupported operand"),
    ],
)
@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, content, message, suffix):
    path = tmp_path / f"controlnet_model_11_80000{suffix}"
    path.write_bytes(content)
    if suffix == ".safetensors" and content.startswith(b"\x80"):
        message = "truncated or not a safetensors file"
    with pytest.raises(CheckpointError, match=message) as error:
        load_state_dict(path)
    assert str(path) in str(error.value) and "more than tensors" not in str(error.value)


def test_pickle_without_a_state_dict(tmp_path):
    path = tmp_path / "tensor.bin"
    torch.save(torch.ones(3), path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_state_dict(path)


def test_wrong_keys_are_listed(tmp_path, tiny_config):
    model = _build(tiny_config, seed=5)
    state_dict = model.state_dict()
    del state_dict["middle_block_out.bias"]
    state_dict["control_model.down_blocks.0.weight"] = torch.zeros(1)
    path = tmp_path / "wrong_keys.safetensors"
    save_file(state_dict, path)
    with pytest.raises(CheckpointError) as error:
        load_control_weights(model, path)
    message = str(error.value)
    assert "1 missing key(s)" in message and "`middle_block_out.bias`" in message
    assert "1 unexpected key(s)" in message and "`control_model.down_blocks.0.weight`" in message


def test_wrong_shapes_are_listed(tmp_path, tiny_config):
    model = _build(tiny_config, seed=6)
    state_dict = model.state_dict()
    state_dict["middle_block_out.weight"] = torch.zeros(3, 3)
    path = tmp_path / "wrong_shapes.bin"
    torch.save({"controlnet": state_dict}, path)
    with pytest.raises(CheckpointError, match=r"`middle_block_out.weight \(3, 3\) != \(128, 128\)`"):
        load_control_weights(model, path)
