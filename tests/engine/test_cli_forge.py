"""`stylecodes forge` and `stylecodes imagine --lora` on the demo model: outputs, resume after Ctrl+C, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stylecodes.cli import forge as forge_command
from stylecodes.lora.adapter import LoraAdapter
from tests.engine.test_cli import assert_one_line_error, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = ["--model-version", "0", "--steps", "2", "--checkpoint-every", "1", "--prior-images", "1"]
QUICK += ["--preview-steps", "1", "--learning-rate", "0.01"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "my-images"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_forge_resumes_after_an_interrupt_then_imagine_uses_the_style(capsys, tmp_path, images, monkeypatch):
    out = tmp_path / "my-style.safetensors"
    checkpoint = tmp_path / "my-style.safetensors.checkpoint"
    write = forge_command._write

    def write_then_interrupt(path, data):
        write(path, data)
        raise KeyboardInterrupt  # Ctrl+C right after the first checkpoint

    monkeypatch.setattr(forge_command, "_write", write_then_interrupt)
    code, _, err = run(capsys, "forge", str(images), "--out", str(out), *QUICK)
    assert code == 130 and "Interrupted." in err and checkpoint.is_file() and not out.exists()

    monkeypatch.setattr(forge_command, "_write", write)
    code, stdout, _ = run(capsys, "forge", str(images), "--out", str(out), *QUICK)
    assert code == 0, stdout
    assert "Resuming from step 1" in stdout and "generated DreamBooth prior images" in stdout
    assert "warning: Only 5 images" in stdout
    assert not checkpoint.exists()  # finished: the checkpoint is gone
    sidecar = json.loads((tmp_path / "my-style.safetensors.json").read_text())
    adapter = LoraAdapter.read(out)
    assert sidecar["sha256"] == adapter.sha256 and adapter.sha256 in stdout
    assert sidecar["manifest"]["trigger_words"] == ["sks style"] and sidecar["manifest"]["extra"] == {
        "name": "my-style"
    }
    assert Image.open(tmp_path / "my-style.preview.png").size == (128, 128)

    # The version comes from the adapter; the trigger words join the prompt; the output differs from no adapter.
    plain, styled = tmp_path / "plain.png", tmp_path / "styled.png"
    common = ["--steps", "2", "--width", "64", "--height", "64", "--seed", "4"]
    assert run(capsys, "imagine", "a cat", "--model-version", "0", *common, "--out", str(plain))[0] == 0
    assert run(capsys, "imagine", "a cat", "--lora", str(out), *common, "--out", str(styled))[0] == 0
    metadata = json.loads(Image.open(styled).text["stylecodes"])
    assert metadata["prompt"] == "a cat, sks style" and metadata["loras"][0]["sha256"] == adapter.sha256
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(styled)))

    code, _, err = run(capsys, "imagine", "a cat", "--lora", str(out), "--model-version", "1")
    assert_one_line_error(code, err, "forged on model version 0's base", "--model-version 0")


def test_forge_and_lora_errors_are_one_line(capsys, tmp_path, images):
    (images / "4.png").unlink()
    code, _, err = run(capsys, "forge", str(images), "--out", str(tmp_path / "s.safetensors"), *QUICK)
    assert_one_line_error(code, err, "4 distinct image(s) were given; at least 5 are needed")
    code, _, err = run(capsys, "forge", str(images), "--out", str(tmp_path / "s.bin"), *QUICK)
    assert_one_line_error(code, err, "--out must end in .safetensors")
    code, _, err = run(capsys, "forge", str(images), "--out", str(tmp_path / "s.safetensors"), "--trigger", "a b")
    assert_one_line_error(code, err, "`trigger` must be one word")
    code, _, err = run(capsys, "imagine", "a cat", "--lora", str(tmp_path / "missing.safetensors"))
    assert_one_line_error(code, err, "missing.safetensors` does not exist")
    (tmp_path / "fake.safetensors").write_bytes(b"not a lora")
    code, _, err = run(capsys, "imagine", "a cat", "--lora", str(tmp_path / "fake.safetensors"))
    assert_one_line_error(code, err, "is not a safetensors file")
    code, _, err = run(capsys, "imagine", "a cat", "--lora", str(tmp_path / "fake.safetensors"), "--lora-scale", "3")
    assert_one_line_error(code, err, "--lora-scale must be in 0..2")
