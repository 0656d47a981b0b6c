"""The `stylecodes` command line: every command, one-line errors with exit code 2, and one end-to-end run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from stylecodes.cli import common, main, paint
from stylecodes.codec import parse_code
from stylecodes.versions import get_spec

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


def test_encode_loads_and_encodes_in_chunks_printing_codes_as_they_come(capsys, monkeypatch, tmp_path, style_images):
    from stylecodes.models.image_encoder import StyleImageEncoder

    paths = []
    for index in range(paint.ENCODE_CHUNK + 2):
        paths.append(tmp_path / f"image-{index}.png")
        style_images[index % 2].save(paths[-1])
    events, printed = [], []

    def lines_so_far() -> int:
        printed.extend(capsys.readouterr().out.splitlines())
        return len(printed)

    def recording_load(name):
        events.append(("load", lines_so_far()))
        return load_image(name)

    original_encode = StyleImageEncoder.encode

    def recording_encode(self, images):
        events.append(("encode", len(images)))
        return original_encode(self, images)

    load_image = paint.load_image
    monkeypatch.setattr(paint, "load_image", recording_load)
    monkeypatch.setattr(StyleImageEncoder, "encode", recording_encode)
    assert main(["encode", *map(str, paths), "--model-version", "0"]) == 0
    lines_so_far()
    first_chunk = [("load", 0)] * paint.ENCODE_CHUNK + [("encode", paint.ENCODE_CHUNK)]
    # the second chunk's files are read only after the first chunk's codes were printed
    assert events == [*first_chunk, ("load", paint.ENCODE_CHUNK), ("load", paint.ENCODE_CHUNK), ("encode", 2)]
    assert [line.split("\t")[1] for line in printed] == list(map(str, paths))
    codes = [line.split("\t")[0] for line in printed]
    assert codes[0::2] == [codes[0]] * 5 and codes[1::2] == [codes[1]] * 5 and codes[0] != codes[1]


def test_encode_codes_do_not_depend_on_dtype(capsys, tmp_path, style_images):
    image = tmp_path / "style.png"
    style_images[1].save(image)
    codes = {}
    for dtype in ("float32", "bfloat16"):
        code, out, err = run(capsys, "encode", str(image), "--model-version", "0", "--dtype", dtype)
        assert code == 0, err
        codes[dtype] = out.split("\t")[0]
    assert codes["bfloat16"] == codes["float32"]
    with pytest.raises(SystemExit) as exit_info:  # argparse: not one of the choices
        main(["encode", str(image), "--dtype", "float8"])
    assert exit_info.value.code == 2 and "invalid choice: 'float8'" in capsys.readouterr().err


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


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    """The demo model's control module saved like the release: a torch pickle of {"controlnet": state_dict}."""
    from stylecodes.demo import build_demo_components

    state_dict = build_demo_components().control_model.state_dict()
    path = tmp_path_factory.mktemp("checkpoint") / "control.bin"
    torch.save({"controlnet": state_dict}, path)
    return path, state_dict


def test_convert_checkpoint(capsys, tmp_path, demo_checkpoint):
    from safetensors.torch import load_file

    src, state_dict = demo_checkpoint
    dst = tmp_path / "out" / "control.safetensors"
    code, out, _ = run(capsys, "convert-checkpoint", str(src), str(dst), "--model-version", "0")
    assert code == 0 and out.strip() == str(dst)
    converted = load_file(str(dst))
    assert converted.keys() == state_dict.keys()
    assert all(torch.equal(converted[key], tensor) for key, tensor in state_dict.items())
    code, _, err = run(capsys, "convert-checkpoint", str(tmp_path / "missing.bin"), str(dst))
    assert_one_line_error(code, err, "missing.bin")


def test_convert_checkpoint_refuses_other_files_before_writing(capsys, tmp_path, demo_checkpoint):
    other, dst = tmp_path / "other.bin", tmp_path / "out.safetensors"
    torch.save({"foo": torch.zeros(3)}, other)
    code, _, err = run(capsys, "convert-checkpoint", str(other), str(dst), "--model-version", "0")
    assert_one_line_error(code, err, "other.bin is not a StyleCodes control checkpoint", "`foo`", "`control_model.*`")
    # A control checkpoint of another model: version 1's (SD1.5-sized) module does not fit the demo's tensors.
    code, _, err = run(capsys, "convert-checkpoint", str(demo_checkpoint[0]), str(dst))
    assert_one_line_error(code, err, "does not fit StyleCodesControlModel", "missing key(s)")
    assert not dst.exists()


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
    assert "procedural" in err  # the demo model says so whenever it is used
    assert f"{image_path}\tseed 42\tcode {stylecode}" in out
    with Image.open(image_path) as painted:
        assert painted.format == "PNG" and painted.size == (96, 64)
        metadata = json.loads(painted.text["stylecodes"])
        painted.load()
        pixels = painted.tobytes()
    assert metadata["style_code"] == stylecode and metadata["seed"] == 42 and metadata["model_version"] == 0
    assert metadata["model_title"] == get_spec(0).title and metadata["base_model"] == get_spec(0).base_model

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


def test_imagine_with_a_style_image_paints_with_its_code(capsys, tmp_path, style_images, monkeypatch):
    from stylecodes.engine import StyleEngine

    style = tmp_path / "style.png"
    style_images[0].save(style)
    code, out, _ = run(capsys, "encode", str(style), "--model-version", "0")
    assert code == 0
    image_code = out.split("\t")[0]
    loads = []
    original_load = StyleEngine.load

    def recording_load(version, **kwargs):
        loads.append((version, kwargs["dtype"]))
        return original_load(version, **kwargs)

    monkeypatch.setattr(StyleEngine, "load", recording_load)
    out_path = tmp_path / "styled.png"
    argv = ["imagine", "a barn", "--style-image", str(style), "--model-version", "0", "--seed", "5", "--count", "2"]
    code, out, err = run(capsys, *argv, "--steps", "2", "--width", "64", "--height", "64", "--out", str(out_path))
    assert code == 0, err
    assert loads == [(0, torch.float32)]
    paths = [tmp_path / "styled-1.png", tmp_path / "styled-2.png"]
    assert out.splitlines() == [f"{paths[0]}\tseed 5\tcode {image_code}", f"{paths[1]}\tseed 6\tcode {image_code}"]
    assert err.count("procedural") == 1  # warnings are printed once, not once per image
    for path, seed in zip(paths, (5, 6), strict=True):
        with Image.open(path) as painted:
            metadata = json.loads(painted.text["stylecodes"])
        assert (metadata["style_code"], metadata["seed"]) == (image_code, seed)
        assert metadata["model_title"] == get_spec(0).title


def test_imagine_dtype_option_sets_the_engine_dtype(capsys, tmp_path, monkeypatch):
    from stylecodes.engine import StyleEngine

    loads = []
    original_load = StyleEngine.load

    def recording_load(version, **kwargs):
        loads.append(kwargs["dtype"])
        return original_load(version, **kwargs)

    monkeypatch.setattr(StyleEngine, "load", recording_load)
    out_path = tmp_path / "bf16.png"
    argv = ["imagine", "a", "--code", "AAAAAAAAAAAAAAAAAAAA0", "--seed", "1", "--steps", "1", "--dtype", "bfloat16"]
    code, _, err = run(capsys, *argv, "--width", "64", "--height", "64", "--out", str(out_path))
    assert code == 0, err
    assert loads == [torch.bfloat16]
    with Image.open(out_path) as painted:
        assert painted.size == (64, 64)


@pytest.mark.parametrize("device", ["nonsense", "meta", "mps", "xpu", "cuda:x", "cpu:0", "CUDA"])
def test_unsupported_devices_are_one_line(capsys, device):
    code, _, err = run(capsys, "imagine", "a", "--code", "AAAAAAAAAAAAAAAAAAAA0", "--device", device)
    assert_one_line_error(code, err, f"--device {device!r} is not supported; use auto, cpu, cuda or cuda:N")


def test_cuda_device_index_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("cuda", "cuda:0", "cuda:1"):
        options = argparse.Namespace(device=name, dtype="auto")
        assert common.device_and_dtype(options) == (torch.device(name), torch.float16)
    message = r"--device cuda:2 does not exist: this machine has 2 CUDA GPU\(s\), so use cuda:0 to cuda:1"
    with pytest.raises(common.CliError, match=message):
        common.device_and_dtype(argparse.Namespace(device="cuda:2", dtype="auto"))


def test_bad_device_is_one_line(capsys, tmp_path, style_images):
    if not torch.cuda.is_available():
        image = tmp_path / "style.png"
        style_images[0].save(image)
        code, _, err = run(capsys, "encode", str(image), "--model-version", "0", "--device", "cuda")
        assert_one_line_error(code, err, "no CUDA GPU is available")
