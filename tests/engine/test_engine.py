"""StyleEngine, the facade the bot's worker and the CLI use."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylecodes import engine as engine_module
from stylecodes.codec import parse_code, random_code
from stylecodes.engine import GenerationRequest, GenerationResult, StyleEngine
from stylecodes.images import load_image
from stylecodes.styles import CodeStyle
from stylecodes.versions import UnservedVersionError

SMALL = {"steps": 2, "width": 64, "height": 64}


def test_request_defaults_are_the_published_settings():
    request = GenerationRequest(prompt="a", seed=1)
    code = random_code(0, np.random.default_rng(1))
    assert (CodeStyle(code).strength, request.steps, request.guidance_scale) == (0.9, 20, 3.0)
    assert (request.width, request.height, request.styles, request.negative_prompt) == (512, 512, (), "")
    assert request.batch_key() == (20, 3.0, 512, 512, ())
    styled = GenerationRequest(prompt="b", seed=2, styles=(CodeStyle(code, 0.2),))
    assert styled.batch_key() == request.batch_key() and styled.code_style == CodeStyle(code, 0.2)
    assert GenerationRequest(prompt="a", seed=1, steps=4).batch_key() != request.batch_key()


def test_request_fields_become_plain_python_numbers():
    style = CodeStyle(random_code(0, np.random.default_rng(1)), strength=np.float32(0.5))
    request = GenerationRequest(
        "a", seed=np.int64(3), styles=(style,), steps=np.int32(4), guidance_scale=np.float64(2.0),
        width=np.int64(64), height=np.uint16(72),
    )  # fmt: skip
    strength = request.code_style.strength
    values = (request.seed, strength, request.steps, request.guidance_scale, request.width, request.height)
    assert values == (3, 0.5, 4, 2.0, 64, 72)
    assert [type(value) for value in values] == [int, float, int, float, int, int]


def test_demo_engine_properties(demo_engine):
    assert demo_engine.version == 0
    assert demo_engine.has_safety_checker is False
    assert demo_engine.device == torch.device("cpu") and demo_engine.dtype == torch.float32


def test_generate_a_mixed_batch(demo_engine):
    code = random_code(0, np.random.default_rng(5))
    requests = [
        GenerationRequest(prompt="a fox", seed=1, styles=(CodeStyle(code),), **SMALL),
        GenerationRequest(prompt="a fox", seed=1, styles=(CodeStyle(code, 1.3),), negative_prompt="blur", **SMALL),
        GenerationRequest(prompt="a barn", seed=2, styles=(), **SMALL),
    ]
    results = demo_engine.generate(requests)
    assert [type(result) for result in results] == [GenerationResult] * 3
    assert [result.request for result in results] == requests
    assert all(result.image.size == (64, 64) and result.image.mode == "RGB" for result in results)
    assert [result.nsfw for result in results] == [None, None, None]
    assert all(any("procedural" in warning for warning in result.warnings) for result in results)
    first, second, third = (result.metadata for result in results)
    assert (first["style_code"], first["seed"], first["strength"]) == (code.canonical, 1, 0.9)
    assert (second["strength"], second["negative_prompt"]) == (1.3, "blur")
    assert third["style_code"] is None and third["model_version"] == 0
    assert "procedural" in first["model_title"]
    assert not np.array_equal(np.asarray(results[0].image), np.asarray(results[1].image))


def test_generate_is_deterministic(demo_engine):
    style = CodeStyle(parse_code("AAAAAAAAAA__________0"))
    request = GenerationRequest(prompt="a fox", seed=9, styles=(style,), **SMALL)
    first, second = demo_engine.generate([request]), demo_engine.generate([request])
    assert np.array_equal(np.asarray(first[0].image), np.asarray(second[0].image))


def test_generate_reports_steps_with_lazy_previews(demo_engine):
    seen = []
    demo_engine.generate(
        [GenerationRequest(prompt="a", seed=1, **SMALL), GenerationRequest(prompt="b", seed=2, **SMALL)],
        on_step=lambda step, total, make_previews: seen.append((step, total, [p.size for p in make_previews()])),
    )
    assert seen == [(1, 2, [(8, 8), (8, 8)]), (2, 2, [(8, 8), (8, 8)])]


def test_generate_refuses_bad_batches(demo_engine):
    with pytest.raises(ValueError, match=r"`requests` is empty"):
        demo_engine.generate([])
    with pytest.raises(ValueError, match=r"share one batch_key"):
        demo_engine.generate(
            [GenerationRequest("a", 1, **SMALL), GenerationRequest("a", 1, steps=3, width=64, height=64)]
        )
    with pytest.raises(UnservedVersionError, match=r"version 1 are not served here.*0 \(demo"):
        version_1 = CodeStyle(parse_code("C_d_AAI_rQglIvUb1_fC1"))
        demo_engine.generate([GenerationRequest("a", 1, styles=(version_1,), **SMALL)])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 68}, r"`width` must be a multiple of 8.*try 64 or 72"),
        ({"height": 32}, r"`height` must be between 64 and 2048"),
        ({"styles": "strength 2"}, r"`strength` must be between 0 and 1.5"),
        ({"steps": 0}, r"`steps` must be between 1 and 500"),
        ({"steps": 1000}, r"`steps` must be between 1 and 500"),
        ({"guidance_scale": float("inf")}, r"`guidance_scale`"),
        ({"seed": -3}, r"`seed` must be between 0"),
        ({"seed": 1.5}, r"`seed` must be an integer"),
        ({"prompt": None}, r"`prompt` must be a string"),
        ({"negative_prompt": 3}, r"`negative_prompt` must be a string"),
        ({"styles": ("C_d_AAI_rQglIvUb1_fC1",)}, r"Each of `styles` must be one of CodeStyle.*got str"),
        ({"styles": "two codes"}, r"two styles for the stylecode mode"),
        ({"styles": "a code"}, r"`styles` must be a tuple of styles"),
    ],
)
def test_bad_requests_are_refused_when_created(fields, message):
    code = parse_code("C_d_AAI_rQglIvUb1_fC1")
    named = {  # styles that must be built inside the check (CodeStyle checks its strength itself)
        "strength 2": lambda: (CodeStyle(code, 2.0),),
        "two codes": lambda: (CodeStyle(code), CodeStyle(code, 0.5)),
        "a code": lambda: CodeStyle(code),
    }
    with pytest.raises(ValueError, match=message):
        styles = fields.get("styles")
        arguments = {"prompt": "a", "seed": 1, **fields}
        if isinstance(styles, str):
            arguments["styles"] = named[styles]()
        GenerationRequest(**arguments)


def test_encode_gives_codes_of_the_engine_version(demo_engine, style_images):
    codes = demo_engine.encode(style_images)
    assert [code.version for code in codes] == [0, 0]
    assert demo_engine.encode(style_images) == codes


def test_encoding_stays_float32_in_a_half_precision_engine(demo_engine, style_images):
    half = StyleEngine.load(0, dtype=torch.bfloat16)
    pipeline = half.pipeline
    assert half.dtype == torch.bfloat16 and pipeline.unet.dtype == torch.bfloat16
    assert pipeline.control_model.dtype == torch.bfloat16  # the control stream follows the UNet
    encoder = pipeline.style_image_encoder()
    assert {parameter.dtype for parameter in encoder.vision_model.parameters()} == {torch.float32}
    assert {parameter.dtype for parameter in encoder.autoencoder.parameters()} == {torch.float32}
    assert half.encode(style_images) == demo_engine.encode(style_images)  # the same codes as in float32
    pipeline.to(dtype=torch.float16)  # a later cast keeps them too
    assert encoder.vision_model.dtype == torch.float32 and encoder.autoencoder.dtype == torch.float32
    pipeline.to(dtype=torch.bfloat16)
    [code] = half.encode(style_images[:1])
    [result] = half.generate([GenerationRequest("a bridge", seed=3, styles=(CodeStyle(code),), **SMALL)])
    assert result.image.size == (64, 64) and result.metadata["style_code"] == code.canonical


def test_transparent_images_encode_alike_from_pil_and_from_a_file(demo_engine):
    rng = np.random.default_rng(11)
    rgba = rng.integers(0, 256, (64, 96, 4), dtype=np.uint8)
    rgba[:, :48, 3] = 0  # the left half fully transparent: its (random) colours must not show
    image = Image.fromarray(rgba, mode="RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    from_file = demo_engine.encode([load_image(buffer.getvalue())])
    assert demo_engine.encode([image]) == from_file  # composited on white both ways
    assert demo_engine.encode([image.convert("RGB")]) != from_file  # dropping alpha instead shows the hidden colours
    styled = demo_engine.pipeline("a", style=image, seed=1, width=64, height=64, num_inference_steps=1)
    assert styled.metadata[0]["style_code"] == from_file[0].canonical


def test_encode_then_generate_with_the_code(demo_engine, style_images):
    [code] = demo_engine.encode(style_images[:1])
    [result] = demo_engine.generate([GenerationRequest("a bridge", seed=3, styles=(CodeStyle(code),), **SMALL)])
    assert result.metadata["style_code"] == code.canonical
    assert result.metadata["model_fingerprint"] == demo_engine.fingerprint.as_metadata()
    json.dumps(result.metadata)  # the bot stores and posts the metadata as JSON


def test_published_style_engine_has_a_safety_checker(published_files, monkeypatch):
    for name, value in published_files.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(engine_module, "get_spec", lambda version: published_files.spec)
    engine = StyleEngine.load(1)
    assert engine.version == 1 and engine.has_safety_checker
    assert engine.base_model == str(published_files.base_folder)
    code = random_code(1, np.random.default_rng(0))
    [result] = engine.generate([GenerationRequest("a", seed=1, styles=(CodeStyle(code),), **SMALL)])
    assert isinstance(result.nsfw, bool)
    assert not any("procedural" in warning for warning in result.warnings)
    assert result.metadata["base_model"] == str(published_files.base_folder)
    checkpoint = published_files.checkpoint_safetensors
    expected = {"sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(), "source": str(checkpoint)}
    assert result.metadata["model_fingerprint"] == {**expected, "revision": None}  # a local file has no revision
    assert engine.fingerprint.as_metadata() == result.metadata["model_fingerprint"]


def test_demo_fingerprint_is_its_version_folders(demo_engine):
    from stylecodes.versions import DEMO_FOLDER, get_spec

    fingerprint = demo_engine.fingerprint
    assert len(fingerprint.sha256) == 64 and fingerprint.revision is None
    assert fingerprint.source == str(DEMO_FOLDER.resolve())
    assert get_spec(0).fingerprint == f"sha256:{fingerprint.sha256}"  # the manifest's, checked against the files


def test_encoding_without_an_image_encoder_says_so(demo_engine, monkeypatch):
    monkeypatch.setattr(demo_engine.pipeline, "image_encoder", None)
    with pytest.raises(ValueError, match="need the SigLIP `image_encoder`; this pipeline was built without one"):
        demo_engine.encode([Image.new("RGB", (32, 32), "white")])
