"""The trained demo model (version 0): its images follow codes of styles it never saw, and its recipe runs."""

from __future__ import annotations

import numpy as np
import pytest

from stylecodes import versions
from stylecodes.cli import main
from stylecodes.engine import StyleEngine
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle
from stylecodes.training import procedural
from stylecodes.training.evaluate import Benchmark, code_separation, evaluate_engine
from stylecodes.versions import spec_from_folder

HELD_OUT = 8  # references per retrieval: the criterion needs at least 8


@pytest.fixture(scope="module")
def demo():
    return StyleEngine.load(0)


@pytest.mark.xfail(
    strict=True,
    reason="not met yet: the shipped demo paints the same picture for every code (retrieval at chance, 12.5%); "
    "see docs/training.md, 'The demo model: where it stands'",
)
def test_images_follow_the_code_on_held_out_styles(demo):
    # Eight styles whose palettes the training set kept away from (procedural.MIN_PALETTE_DISTANCE), two prompts:
    # is each picture's style nearest to its own reference among the eight, by a pretrained style descriptor
    # (Magenta's network, offline) and by a plain colour histogram?
    prompts = ["a large circle in the center", "a small square on the left"]
    benchmark = Benchmark.default(count=HELD_OUT, prompts=prompts)
    result = evaluate_engine(demo, benchmark, size=64, steps=10)
    assert result.rates["style_vector"] >= 0.8, result.rates
    assert result.rates["colour_histogram"] >= 0.8, result.rates


def test_codes_of_different_styles_are_far_apart_and_crops_of_one_style_close(demo):
    separation = code_separation(demo, procedural.HELD_OUT_STYLES[:HELD_OUT], crops=3)
    assert separation["inter"] > 2 * separation["intra"], separation


def test_the_recipe_reproduces_a_loadable_version(tmp_path, monkeypatch, capsys):
    from stylecodes.demo.recipe import main as recipe

    out = tmp_path / "model"
    assert recipe(["--out", str(out), "--work", str(tmp_path / "work"), "--scale", "0.002"]) == 0
    spec = spec_from_folder(out)
    assert spec.version == 0 and spec.fingerprint.startswith("sha256:")
    monkeypatch.setitem(versions.VERSIONS, 8, spec_from_folder_as(out, 8))
    engine = StyleEngine.load(8)
    [code] = engine.encode([procedural.style_image(procedural.HELD_OUT_STYLES[0], np.random.default_rng(0))])
    request = GenerationRequest("a small cross", seed=1, styles=(CodeStyle(code),), steps=2, width=64, height=64)
    [result] = engine.generate([request])
    assert result.image.size == (64, 64)
    assert result.metadata["model_fingerprint"]["sha256"] == spec.fingerprint.removeprefix("sha256:")
    assert main(["decode", code.canonical]) == 0
    assert f"fingerprint {spec.short_fingerprint}" in capsys.readouterr().out


def spec_from_folder_as(folder, version):
    import dataclasses

    return dataclasses.replace(spec_from_folder(folder), version=version)
