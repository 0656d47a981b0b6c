"""The deadiff style mode on the seam, with the demo model's DEADiff (random weights from a fixed seed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylecodes import engine as engine_module
from stylecodes.codec import random_code
from stylecodes.hub import ModelLoadError
from stylecodes.models.deadiff.attention import DEADiffAttnProcessor, cross_attentions
from stylecodes.models.deadiff.settings import ACCEPT_LICENSE_ENV, CHECKPOINT_ENV
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle, DEADiffStyle, StyleImage, style_from_json

SMALL = {"steps": 3, "width": 64, "height": 64}


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def engine(demo_engine):
    return demo_engine


@pytest.fixture(scope="module")
def painted(engine, style_images):
    """A DEADiff-styled sample and an unstyled one, in one batch."""
    styled = GenerationRequest("a lighthouse", 5, styles=(StyleImage(style_images[0], "deadiff", 1.0),), **SMALL)
    plain = GenerationRequest("a lighthouse", 6, **SMALL)
    return engine.generate([styled, plain])


def test_a_style_image_becomes_float16_tokens_recorded_for_a_repaint(engine, painted):
    styled, plain = painted
    assert styled.metadata["style_modes"] == ["deadiff"] and styled.metadata["deadiff_source"] == "image"
    style = style_from_json(json.loads(json.dumps(styled.metadata["deadiff_style"])))
    assert isinstance(style, DEADiffStyle) and style.tokens.shape == (16, 32) and style.strength == 1.0
    assert plain.metadata["deadiff_style"] is None and plain.metadata["style_modes"] == []
    [repaint] = engine.generate([GenerationRequest("a lighthouse", 5, styles=(style,), **SMALL)])
    [alone] = engine.generate(
        [GenerationRequest("a lighthouse", 5, styles=(StyleImage(styled.request.styles[0].image, "deadiff", 1.0),),
                           **SMALL)]
    )
    assert np.array_equal(_pixels(repaint), _pixels(alone))  # the same tokens, the same batch: the same pixels


def test_a_mixed_batch_equals_its_samples_painted_alone(engine, painted):
    for result in painted:
        [alone] = engine.generate([result.request])
        # (a different batch rounds batched products differently: at most one level, as for codes)
        assert np.abs(_pixels(alone) - _pixels(result)).max() <= 1
    [plain] = engine.generate([GenerationRequest("a lighthouse", 5, **SMALL)])
    assert np.abs(_pixels(plain) - _pixels(painted[0])).max() > 5  # the style changes the picture


def test_strength_scales_the_style(engine, painted):
    style = style_from_json(painted[0].metadata["deadiff_style"])
    weak = DEADiffStyle(style.tokens, 0.3)
    [result] = engine.generate([GenerationRequest("a lighthouse", 5, styles=(weak,), **SMALL)])
    assert result.metadata["deadiff_style"]["strength"] == 0.3
    assert not np.array_equal(_pixels(result), _pixels(painted[0]))


def test_combines_with_a_code(engine, painted):
    style = style_from_json(painted[0].metadata["deadiff_style"])
    code = random_code(0, np.random.default_rng(3))
    both, code_only = engine.generate(
        [GenerationRequest("a lighthouse", 5, styles=(CodeStyle(code), style), **SMALL),
         GenerationRequest("a lighthouse", 5, styles=(CodeStyle(code),), **SMALL)]
    )
    assert both.metadata["style_modes"] == ["deadiff", "stylecode"] and both.metadata["style_code"] == code.canonical
    assert np.abs(_pixels(both) - _pixels(code_only)).max() > 5
    assert np.abs(_pixels(both) - _pixels(painted[0])).max() > 5


def test_the_unets_processors_are_back_after_every_call(engine, painted):
    layers = cross_attentions(engine.pipeline.unet)
    assert not any(isinstance(attn.processor, DEADiffAttnProcessor) for _, attn in layers)


def test_tokens_of_another_model_are_refused_before_painting(engine):
    foreign = DEADiffStyle(np.zeros((16, 768), np.float32))
    with pytest.raises(ValueError, match=r"has 16x768 tokens; the loaded DEADiff model makes and reads 16x32"):
        engine.generate([GenerationRequest("a", 1, styles=(foreign,), **SMALL)])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "deadiff", "tokens": "AAAA", "shape": [16, 32], "strength": 1.0}, r"hold 3 bytes; a 16x32"),
        ({"kind": "deadiff", "tokens": "AAAA", "shape": [16], "strength": 1.0}, r"`shape` must be two positive"),
        ({"kind": "deadiff", "tokens": "AAAA", "shape": [1, 1], "strength": 2.0}, r"hold 3 bytes"),
        ({"kind": "deadiff", "shape": [1, 1], "strength": 1.0}, r"`tokens` is missing"),
    ],
)
def test_bad_deadiff_json_is_refused_with_the_reason(data, message):
    with pytest.raises(ValueError, match=message):
        style_from_json(data)


def test_the_style_type_checks_its_tokens_and_round_trips():
    with pytest.raises(ValueError, match=r"\(tokens, width\) array, 16 x 768 for DEADiff, got shape \(768,\)"):
        DEADiffStyle(np.zeros(768))
    with pytest.raises(ValueError, match="finite values within float16's range"):
        DEADiffStyle(np.full((16, 8), 1e6))
    with pytest.raises(ValueError, match=r"`strength` must be between 0 and 1.5"):
        DEADiffStyle(np.zeros((16, 8)), 2.0)
    style = DEADiffStyle(np.arange(128, dtype=np.float32).reshape(16, 8) / 7, 0.7)
    again = style_from_json(json.loads(json.dumps(style.to_json())))
    assert again == style and hash(again) == hash(style) and again.tokens.dtype == np.float16


def test_version_1_offers_deadiff_only_once_the_licence_is_accepted(published_files, monkeypatch, tmp_path, engine):
    from stylecodes.demo.deadiff import build_demo_deadiff
    from stylecodes.engine import StyleEngine

    for name, value in published_files.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(engine_module, "get_spec", lambda version: published_files.spec)
    monkeypatch.delenv(ACCEPT_LICENSE_ENV, raising=False)
    assert "deadiff" not in StyleEngine.load(1).pipeline.modes

    monkeypatch.setenv(ACCEPT_LICENSE_ENV, "1")
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    with pytest.raises(ModelLoadError, match=f"{CHECKPOINT_ENV} is not set"):
        StyleEngine.load(1)

    weights = build_demo_deadiff(engine.pipeline.unet).save_file(tmp_path / "deadiff.safetensors")
    monkeypatch.setenv(CHECKPOINT_ENV, str(weights))
    published = StyleEngine.load(1)
    assert "deadiff" in published.pipeline.modes
    style = DEADiffStyle(np.ones((16, 32), np.float32))
    [result] = published.generate([GenerationRequest("a", 1, styles=(style,), **SMALL)])
    assert result.metadata["deadiff_style"] == style.to_json()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from stylecodes.cli import main

    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_imagine_mode_deadiff_paints_and_records_the_tokens(capsys, tmp_path, style_images):
    from PIL import Image

    style = tmp_path / "style.png"
    style_images[1].save(style)
    out = tmp_path / "painted.png"
    argv = ["imagine", "a barn", "--mode", "deadiff", "--style-image", str(style), "--model-version", "0",
            "--seed", "5", "--count", "2", "--steps", "2", "--width", "64", "--height", "64", "--out", str(out)]
    status, printed, err = _cli(capsys, *argv)
    assert status == 0, err
    paths = [tmp_path / "painted-1.png", tmp_path / "painted-2.png"]
    expected = [f"{path}\tseed {seed}\tcode (none)\tdeadiff" for path, seed in zip(paths, (5, 6), strict=True)]
    assert printed.splitlines() == expected
    tokens = []
    for path in paths:
        with Image.open(path) as painted:
            metadata = json.loads(painted.text["stylecodes"])
        assert metadata["style_modes"] == ["deadiff"] and metadata["deadiff_style"]["strength"] == 1.0
        tokens.append(metadata["deadiff_style"]["tokens"])
    assert tokens[0] == tokens[1]  # one picture, encoded once, the same tokens for both seeds


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--mode", "deadiff"], "--mode deadiff paints with a style image"),
        (["--code", "C_d_AAI_rQglIvUb1_fC1", "--style-image", "x.png"], "or --mode deadiff to combine"),
        (["--mode", "deadiff", "--style-image", "x.png"], f"{ACCEPT_LICENSE_ENV} is not set"),
    ],
)
def test_cli_deadiff_mistakes_fail_in_one_line_before_loading(capsys, monkeypatch, argv, fragment):
    monkeypatch.delenv(ACCEPT_LICENSE_ENV, raising=False)
    status, _, err = _cli(capsys, "imagine", "a cat", *argv)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
