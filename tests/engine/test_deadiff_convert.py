"""Converting DEADiff's Lightning checkpoint: its pickle is never executed; what is not DEADiff's is refused by name."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from stylecodes.checkpoint import CheckpointError
from stylecodes.cli import main
from stylecodes.models.deadiff.checkpoint_reader import read_lightning_checkpoint
from stylecodes.models.deadiff.convert import convert_deadiff_checkpoint
from stylecodes.models.deadiff.files import read_converted
from stylecodes.models.deadiff.model import DEADiffModel
from tests.engine.deadiff_support import Golden, load_golden, save_lightning_checkpoint

MARKER_NAME = "the-pickle-ran"


class _Trap:
    """Pickles as a call to `Path.touch(marker)`: if anything executed the pickle, the marker would exist."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


def test_objects_in_the_pickle_are_not_executed_and_the_tensors_still_convert(golden, tmp_path):
    marker = tmp_path / MARKER_NAME
    source = save_lightning_checkpoint(golden.checkpoint, tmp_path / "deadiff.ckpt", callbacks={"trap": _Trap(marker)})
    notes = convert_deadiff_checkpoint(source, tmp_path / "deadiff.safetensors", **golden.convert_kwargs())
    assert not marker.exists()
    assert any(".getattr" in note and "pathlib.Path" in note for note in notes)  # how Path.touch pickles
    config, state_dict = read_converted(tmp_path / "deadiff.safetensors")
    assert config["content_layers"] == [4, 5, 6, 7, 8]
    assert len(config["inner_dims"]) == 16
    # the content branch and the content layers' projections are not carried over
    assert not any(key.startswith("image_kv.4.") for key in state_dict)
    assert sum(key.startswith("image_kv.") for key in state_dict) == 2 * 11
    mapped = torch.load(source, weights_only=False)["state_dict"]  # (our own file: safe to load fully here)
    torch.testing.assert_close(
        state_dict["style_encoder.query_tokens"], mapped["style_blip.query_tokens"], atol=0, rtol=0
    )


def test_the_reader_returns_views_of_the_file_with_their_own_strides(tmp_path):
    base = torch.arange(24, dtype=torch.float32).view(4, 6)
    tensors = {"a": base, "b": base[:, 1:4], "c": torch.ones(3, dtype=torch.float16), "p": torch.nn.Parameter(base[0])}
    path = save_lightning_checkpoint(tensors, tmp_path / "small.ckpt")
    read = read_lightning_checkpoint(path).state_dict
    for key, tensor in tensors.items():
        torch.testing.assert_close(read[key], tensor.detach(), atol=0, rtol=0)
        assert read[key].dtype == tensor.dtype


def test_a_checkpoint_that_is_not_deadiffs_lists_missing_and_unexpected_keys(tmp_path):
    stylecodes_like = {"sref_autoencoder.input_proj.weight": torch.zeros(2, 2), "control_model.x": torch.zeros(1)}
    source = save_lightning_checkpoint(stylecodes_like, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError) as error:
        convert_deadiff_checkpoint(source, tmp_path / "out.safetensors")
    message = str(error.value)
    assert "is not DEADiff's checkpoint" in message
    assert "missing, e.g. `style_blip.visual_encoder.conv1.weight`" in message
    assert "2 unexpected, e.g. `sref_autoencoder.input_proj.weight`, `control_model.x`" in message
    assert not (tmp_path / "out.safetensors").exists()


def test_a_checkpoint_missing_one_part_names_it(golden, tmp_path):
    partial = {k: v for k, v in golden.checkpoint.items() if not k.startswith("style_proj_layer.")}
    source = save_lightning_checkpoint(partial, tmp_path / "partial.ckpt")
    expected = r"`style_proj_layer\.dense1\.weight`, `style_proj_layer\.LayerNorm\.weight`"
    with pytest.raises(CheckpointError, match=expected):
        convert_deadiff_checkpoint(source, tmp_path / "out.safetensors", **golden.convert_kwargs())


def _corrupt_pickle(path: Path) -> None:
    """Rewrite the archive with data.pkl cut in half (a damaged download)."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data[: len(data) // 2] if name.endswith("data.pkl") else data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt_pickle, "its pickle is corrupt or not a checkpoint's.*Nothing in it was executed"),
        (lambda path: path.write_bytes(path.read_bytes()[:300]), "not a zip-format torch checkpoint"),
        (lambda path: path.write_bytes(b"\x80\x02}q\x00."), "saved by torch < 1.6"),  # a legacy (non-zip) pickle
    ],
)
def test_a_damaged_checkpoint_is_refused_before_anything_runs(tmp_path, damage, message):
    marker = tmp_path / MARKER_NAME
    path = save_lightning_checkpoint({"w": torch.ones(4)}, tmp_path / "bad.ckpt", trap=_Trap(marker))
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        read_lightning_checkpoint(path)
    assert not marker.exists()


def test_the_converted_file_is_required_and_checked(tmp_path):
    with pytest.raises(CheckpointError, match="DEADiff weights not found"):
        DEADiffModel.from_file(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"not a converted DEADiff file.*stylecodes convert-deadiff"):
        DEADiffModel.from_file(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match=r"must end in `\.safetensors`"):
        convert_deadiff_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.bin")


def test_cli_convert_deadiff_reports_a_foreign_checkpoint_in_one_line(tmp_path, capsys):
    source = save_lightning_checkpoint({"first_stage_model.w": torch.zeros(1)}, tmp_path / "sd.ckpt")
    assert main(["convert-deadiff", str(tmp_path / "out.safetensors"), "--checkpoint", str(source)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "is not DEADiff's checkpoint" in error and error.count("\n") == 1
