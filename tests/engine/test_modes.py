"""The style-mode seam: style objects and their JSON, how modes join the pipeline, and what it refuses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from stylecodes import styles as styles_module
from stylecodes.codec import random_code
from stylecodes.modes import StepConditioning, StyleMode
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle, StyleImage, style_from_json

FAST = {"width": 64, "height": 64, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def pipe(demo_engine):
    return demo_engine.pipeline


@pytest.fixture(scope="module")
def code():
    return random_code(0, np.random.default_rng(7))


def test_requests_round_trip_through_json_with_every_style_type(code, style_images):
    request = GenerationRequest(
        "a kite", seed=4, styles=(CodeStyle(code, 1.2), StyleImage(style_images[0], "other", 0.5)), steps=3
    )
    again = GenerationRequest.from_json(json.loads(json.dumps(request.to_json())))
    assert again.code_style == CodeStyle(code, 1.2) and again.steps == 3 and again.modes == ("stylecode", "other")
    image = again.style_of("other")
    assert np.array_equal(np.asarray(image.image), np.asarray(style_images[0].convert("RGB")))
    assert GenerationRequest.from_json(GenerationRequest("plain", seed=1).to_json()) == GenerationRequest("plain", 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "sticker"}, r"Unknown style kind 'sticker'; known kinds are code, deadiff, image"),
        ({"code": "x"}, r"must be an object with a `kind`"),
        ({"kind": "code", "strength": 0.5}, r"`code` is missing"),
        ({"kind": "code", "code": "C_d_AAI_rQglIvUb1_fC1", "strength": "high"}, r"`strength` is missing or of"),
        ({"kind": "code", "code": "C_d_AAI_rQglIvUb1_fC1", "strength": 3}, r"`strength` must be between 0 and 1.5"),
        ({"kind": "image", "image": "not base64!", "mode": "stylecode", "strength": 1}, r"Non-base64|Incorrect|base64"),
    ],
)
def test_bad_style_json_is_refused_with_the_reason(data, message):
    with pytest.raises(ValueError, match=message):
        style_from_json(data)


def test_bad_request_json_is_refused():
    with pytest.raises(ValueError, match=r"Not a generation request"):
        GenerationRequest.from_json({"prompt": "a", "seed": 1, "colour": "red"})
    with pytest.raises(ValueError, match=r"`styles` must be a list"):
        GenerationRequest.from_json({"prompt": "a", "seed": 1, "styles": "code"})


def test_code_style_objects_paint_what_codes_do(pipe, code):
    legacy = pipe("a hill", style=code, strength=1.1, seed=3, **FAST)
    styled = pipe("a hill", style=CodeStyle(code, 1.1), seed=3, **FAST)
    combined = pipe("a hill", style=(CodeStyle(code, 1.1),), seed=3, **FAST)
    for out in (styled, combined):
        assert np.array_equal(np.asarray(out.images[0]), np.asarray(legacy.images[0]))
        assert out.metadata[0] == legacy.metadata[0]
    assert legacy.metadata[0]["style_modes"] == ["stylecode"] and legacy.metadata[0]["strength"] == 1.1


def test_style_images_become_codes_inside_the_call(pipe, style_images):
    [image_code] = pipe.style_image_encoder().encode(style_images[:1])
    from_image = pipe("a hill", style=StyleImage(style_images[0], strength=0.8), seed=3, **FAST)
    from_code = pipe("a hill", style=CodeStyle(image_code, 0.8), seed=3, **FAST)
    assert np.array_equal(np.asarray(from_image.images[0]), np.asarray(from_code.images[0]))
    assert from_image.metadata[0]["style_code"] == image_code.canonical
    assert from_image.metadata[0]["style_source"] == "image"


@dataclass(frozen=True)
class _Ink:
    """A test mode's style: adds words to the prompt."""

    kind: ClassVar[str] = "ink"
    mode: ClassVar[str] = "ink"
    words: str
    strength: float = 1.0

    def batch_part(self) -> Any:
        return None


class _InkMode(StyleMode):
    name = "ink"
    conflicts_with = frozenset({"pencil"})

    def __init__(self) -> None:
        self.prepared: list[list[Any]] = []
        self.finished = 0

    def resolve(self, inputs):
        return [None if item is None else item.value.words for item in inputs]

    def rewrite_prompt(self, prompt, resolved):
        return prompt if resolved is None else f"{prompt}, {resolved}"

    def prepare(self, resolved, batch):
        self.prepared.append(list(resolved))
        assert batch.latent_size == (8, 8) and batch.cfg and batch.dtype == torch.float32
        return None  # nothing for the UNet: the words do the work

    def metadata(self, resolved):
        return {"ink": resolved}

    def finish(self):
        self.finished += 1


class _PencilMode(_InkMode):
    name = "pencil"
    conflicts_with = frozenset({"ink"})


@pytest.fixture
def ink_pipe(pipe, monkeypatch):
    monkeypatch.setitem(styles_module.STYLE_TYPES, "ink", _Ink)
    mode = _InkMode()
    monkeypatch.setitem(pipe.modes, "ink", mode)
    return pipe, mode


def test_a_mode_joins_the_pipeline_through_the_seam(ink_pipe, code):
    pipe, mode = ink_pipe
    out = pipe(["a cow", "a cow"], style=[(CodeStyle(code), _Ink("in ink")), None], seed=[5, 6], **FAST)
    alone = pipe("a cow, in ink", style=code, seed=5, **FAST)
    plain = pipe("a cow", seed=6, **FAST)
    # the mode rewrote the first prompt only, and combined with the code; the second sample is plain SD1.5 (batched
    # against alone: equal up to float rounding of batched matrix products, one level of 255 at most)
    assert _pixel_difference(out.images[0], alone.images[0]) <= 1
    assert _pixel_difference(out.images[1], plain.images[0]) <= 1
    assert mode.prepared == [["in ink", None]] and mode.finished == 1
    assert out.metadata[0]["ink"] == "in ink" and out.metadata[0]["prompt"] == "a cow"  # the user's prompt is kept
    assert out.metadata[0]["style_modes"] == ["ink", "stylecode"] and out.metadata[1]["ink"] is None


def test_modes_the_pipeline_lacks_or_that_clash_are_refused_before_any_work(ink_pipe, monkeypatch):
    pipe, mode = ink_pipe
    with pytest.raises(ValueError, match=r"no sticker style mode loaded; it paints with: stylecode, deadiff, ink"):
        monkeypatch.setitem(styles_module.STYLE_TYPES, "sticker", type("_Sticker", (_Ink,), {"mode": "sticker"}))
        pipe("a", style=styles_module.STYLE_TYPES["sticker"]("x"), seed=1, **FAST)
    pencil_style = type("_Pencil", (_Ink,), {"mode": "pencil", "kind": "pencil"})
    monkeypatch.setitem(styles_module.STYLE_TYPES, "pencil", pencil_style)
    monkeypatch.setitem(pipe.modes, "pencil", _PencilMode())
    with pytest.raises(ValueError, match=r"The ink style cannot be combined with pencil"):
        pipe("a", style=(_Ink("x"), pencil_style("y")), seed=1, **FAST)
    with pytest.raises(ValueError, match=r"two styles for the ink mode"):
        pipe("a", style=(_Ink("x"), _Ink("y")), seed=1, **FAST)
    with pytest.raises(ValueError, match=r"A tuple `style` combines style objects"):
        pipe("a", style=("C_d_AAI_rQglIvUb1_fC1",), seed=1, **FAST)
    assert mode.prepared == []  # nothing got as far as preparing


def test_finish_runs_even_when_painting_fails(ink_pipe, monkeypatch):
    pipe, mode = ink_pipe

    def broken_step(*args, **kwargs):
        raise RuntimeError("the GPU fell over")

    monkeypatch.setattr(pipe, "_predict_noise", broken_step)
    with pytest.raises(RuntimeError, match="fell over"):
        pipe("a", style=_Ink("x"), seed=1, **FAST)
    assert mode.finished == 1


def test_conditionings_merge_and_refuse_to_overlap():
    first = StepConditioning(added_cond_kwargs={"image_embeds": [1]})
    second = StepConditioning(cross_attention_kwargs={"ip_adapter_masks": [2]})
    merged = first.merge(second)
    assert merged.added_cond_kwargs == {"image_embeds": [1]}
    assert merged.cross_attention_kwargs == {"ip_adapter_masks": [2]}
    with pytest.raises(ValueError, match=r"both set the UNet's added_cond_kwargs \['image_embeds'\]"):
        merged.merge(first)
    control = StepConditioning(control=object())
    with pytest.raises(ValueError, match=r"both steer the UNet through a control module"):
        control.merge(StepConditioning(control=object()))


def _pixel_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def test_add_mode_takes_only_modes(pipe):
    with pytest.raises(TypeError, match=r"`mode` must be a StyleMode"):
        pipe.add_mode(object())
