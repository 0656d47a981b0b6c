"""The `stylecodes` command line: every command, one-line errors with exit code 2, and one end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from stylecodes.cli import main
from stylecodes.codec import parse_code

LEGACY = "Aj8dPwAACD8rECAlCC8UGzU/HwI"
CANONICAL = "C_d_AAI_rQglIvUb1_fC1"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("text", [CANONICAL, LEGACY])
def test_decode_prints_version_both_forms_and_levels(capsys, text):
    code, out, _ = run(capsys, "decode", text)
    assert code == 0
    assert "version:   1" in out
    assert f"canonical: {CANONICAL}" in out and f"legacy:    {LEGACY}" in out
    assert "levels:    2 63 29 63 0 0 8 63 43 16 32 37 8 47 20 27 53 63 31 2" in out


def test_decode_demo_code_has_no_legacy_form(capsys):
    code, out, _ = run(capsys, "decode", "AAAAAAAAAAAAAAAAAAAA0")
    assert code == 0 and "version:   0" in out and "only version-1 codes" in out


def test_decode_bad_code_is_one_line(capsys):
    code, _, err = run(capsys, "decode", "C_d_AAI_rQglIvUb1_f!1")
    assert_one_line_error(code, err, "Character 20", "`!`")


def test_decode_version_option_must_match(capsys):
    code, _, err = run(capsys, "decode", CANONICAL, "--model-version", "0")
    assert_one_line_error(code, err, "version 1 but --model-version is 0")


def test_mix(capsys):
    code, out, _ = run(capsys, "mix", f"{CANONICAL}::2 {CANONICAL}::1")
    assert code == 0 and out.strip() == CANONICAL
    code, _, err = run(capsys, "mix", f"{CANONICAL} AAAAAAAAAAAAAAAAAAAA0")
    assert_one_line_error(code, err, "same encoder version")


def test_random_codes(capsys):
    code, out, _ = run(capsys, "random", "--model-version", "0", "--seed", "4")
    assert code == 0 and parse_code(out.strip()).version == 0
    assert run(capsys, "random", "--model-version", "0", "--seed", "4")[1] == out
    code, out, _ = run(capsys, "random")
    assert code == 0 and parse_code(out.strip()).version == 1  # the default version
    code, _, err = run(capsys, "random", "--model-version", "7")
    assert_one_line_error(code, err, "version 7", "0 (demo", "1 (StyleCodes v1)")


def test_encode_reports_bad_files_and_encodes_the_rest(capsys, tmp_path, style_images):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    style_images[0].save(good)
    bad.write_text("not an image")
    code, out, err = run(capsys, "encode", str(good), str(bad), str(tmp_path / "gone.jpg"), "--model-version", "0")
    assert code == 2
    [line] = out.splitlines()
    printed_code, name = line.split("\t")
    assert parse_code(printed_code).version == 0 and name == str(good)
    assert "bad.png` is not an image" in err and "gone.jpg` does not exist" in err and "Traceback" not in err


def test_imagine_bad_size_fails_before_loading(capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("stylecodes.engine.StyleEngine.load", no_loading)
    code, _, err = run(capsys, "imagine", "a cat", "--code", CANONICAL, "--width", "65")
    assert_one_line_error(code, err, "`width` must be a multiple of 8", "try 64 or 72")


def test_imagine_code_and_version_must_agree(capsys):
    code, _, err = run(capsys, "imagine", "a cat", "--code", CANONICAL, "--model-version", "0")
    assert_one_line_error(code, err, "version 1 are not served", "0 (demo")


def test_imagine_bad_code_and_missing_style_image(capsys, tmp_path):
    code, _, err = run(capsys, "imagine", "a cat", "--code", "short")
    assert_one_line_error(code, err, "21 characters")
    code, _, err = run(capsys, "imagine", "a cat", "--style-image", str(tmp_path / "nope.png"))
    assert_one_line_error(code, err, "does not exist")


def test_imagine_version_1_offline_says_how_to_use_local_files(capsys, offline_hub, tmp_path):
    code, _, err = run(capsys, "imagine", "a cat", "--code", CANONICAL, "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "HF_HUB_OFFLINE", "STYLECODES_V1_CHECKPOINT", "STYLECODES_V1_BASE_MODEL")
    assert not (tmp_path / "x.png").exists()


def test_convert_checkpoint(capsys, tmp_path):
    from safetensors.torch import load_file

    state_dict = {"sref_autoencoder.input_proj.weight": torch.arange(6.0).reshape(2, 3)}
    src, dst = tmp_path / "control.bin", tmp_path / "out" / "control.safetensors"
    torch.save({"controlnet": state_dict}, src)
    code, out, _ = run(capsys, "convert-checkpoint", str(src), str(dst))
    assert code == 0 and out.strip() == str(dst)
    assert torch.equal(load_file(str(dst))["sref_autoencoder.input_proj.weight"], state_dict[next(iter(state_dict))])
    code, _, err = run(capsys, "convert-checkpoint", str(tmp_path / "missing.bin"), str(dst))
    assert_one_line_error(code, err, "missing.bin")


def test_end_to_end_encode_then_imagine_writes_a_png(capsys, tmp_path, style_images):
    style = tmp_path / "style.png"
    style_images[1].save(style)
    code, out, _ = run(capsys, "encode", str(style), "--model-version", "0", "--device", "cpu")
    assert code == 0
    stylecode = out.split("\t")[0]

    image_path = tmp_path / "painted.png"
    argv = ["imagine", "a lighthouse", "--code", stylecode, "--seed", "42", "--steps", "3"]
    code, out, err = run(capsys, *argv, "--width", "96", "--height", "64", "--out", str(image_path))
    assert code == 0, err
    assert "not meaningful" in err  # the demo model says so whenever it is used
    assert f"{image_path}\tseed 42\tcode {stylecode}" in out
    with Image.open(image_path) as painted:
        assert painted.format == "PNG" and painted.size == (96, 64)
        metadata = json.loads(painted.text["stylecodes"])
        painted.load()
        pixels = painted.tobytes()
    assert metadata["style_code"] == stylecode and metadata["seed"] == 42 and metadata["model_version"] == 0

    # The same command paints the same picture.
    again = tmp_path / "again.png"
    assert run(capsys, *argv, "--width", "96", "--height", "64", "--out", str(again))[0] == 0
    with Image.open(again) as repeated:
        assert repeated.tobytes() == pixels


def test_console_entry_point_exits_2_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "stylecodes", "decode", "not-a-code"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_code_starting_with_a_dash_is_read_as_the_code(capsys):
    code, _, err = run(capsys, "imagine", "a cat", "--code", "-AAAAAAAAAAAAAAAAAAA0", "--width", "65")
    assert_one_line_error(code, err, "`width` must be a multiple of 8")  # the code parsed; the width did not


def test_bad_device_is_one_line(capsys, tmp_path, style_images):
    code, _, err = run(capsys, "imagine", "a", "--code", "AAAAAAAAAAAAAAAAAAAA0", "--device", "nonsense")
    assert_one_line_error(code, err, "--device 'nonsense' is not a torch device")
    if not torch.cuda.is_available():
        image = tmp_path / "style.png"
        style_images[0].save(image)
        code, _, err = run(capsys, "encode", str(image), "--model-version", "0", "--device", "cuda")
        assert_one_line_error(code, err, "no CUDA GPU is available")
