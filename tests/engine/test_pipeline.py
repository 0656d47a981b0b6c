"""StyleCodesPipeline on the demo model: arguments, batching, styles, determinism, warnings, callbacks, loading."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylecodes import loaders
from stylecodes.codec import CodeError, StyleCode, random_code
from stylecodes.pipelines.previews import latent_previews
from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.pipelines.text_to_image import StyleCodesPipeline, check_call_arguments
from stylecodes.versions import UnservedVersionError

FAST = {"width": 64, "height": 64, "num_inference_steps": 3}


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def pipe(demo_engine) -> StyleCodesPipeline:
    return demo_engine.pipeline


@pytest.fixture(scope="module")
def codes() -> list[StyleCode]:
    rng = np.random.default_rng(3)
    return [random_code(0, rng) for _ in range(2)]


def test_scheduler_is_the_published_ddim():
    config = make_scheduler().config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert config.steps_offset == 1 and config.clip_sample is False and config.num_train_timesteps == 1000


def test_same_seed_same_image_and_different_seed_differs(pipe, codes):
    first = pipe("a red house", style=codes[0], seed=11, **FAST)
    again = pipe("a red house", style=codes[0], seed=11, **FAST)
    other = pipe("a red house", style=codes[0], seed=12, **FAST)
    assert np.array_equal(_pixels(first.images[0]), _pixels(again.images[0]))
    assert not np.array_equal(_pixels(first.images[0]), _pixels(other.images[0]))
    assert first.images[0].size == (64, 64)


def test_sample_reproducible_regardless_of_batch(pipe, codes):
    batch = pipe(["a boat", "a red house", "a tree"], style=[codes[1], codes[0], None], seed=[5, 11, 9], **FAST)
    alone = pipe("a red house", style=codes[0], seed=11, **FAST)
    # Same noise (per-sample generator) and same inputs; batched matmuls round differently in the last float bits
    # (measured: 0.02 of a level before rounding to 8 bits), which can flip a pixel's rounding by one level.
    difference = np.abs(_pixels(batch.images[1]) - _pixels(alone.images[0]))
    assert difference.max() <= 1
    assert batch.metadata[1]["seed"] == 11


def test_per_sample_strength_and_no_style_in_one_batch(pipe, codes):
    prompt, seed = "a quiet street", 21
    out = pipe(
        [prompt] * 4, style=[codes[0], codes[0], None, codes[1]], strength=[0.9, 0.0, 0.9, 1.2], seed=seed, **FAST
    )
    images = [_pixels(image) for image in out.images]
    # seeds differ per sample (seed + i); compare against single runs with the same seed instead
    plain = pipe(prompt, style=None, seed=seed + 1, **FAST)
    strength_zero = images[1]
    assert np.abs(strength_zero - _pixels(plain.images[0])).max() <= 1  # strength 0 == no style
    styled_alone = pipe(prompt, style=codes[0], strength=0.9, seed=seed + 1, **FAST)
    assert np.abs(_pixels(styled_alone.images[0]) - _pixels(plain.images[0])).max() > 5  # the style does change it
    assert [m["strength"] for m in out.metadata] == [0.9, 0.0, 0.9, 1.2]
    assert [m["style_code"] for m in out.metadata] == [codes[0].canonical, codes[0].canonical, None, codes[1].canonical]
    assert [m["style_source"] for m in out.metadata] == ["code", "code", "none", "code"]


def test_unstyled_sample_in_a_styled_batch_is_the_plain_unet(pipe, codes):
    mixed = pipe(["a cup", "a cup"], style=[codes[0], None], seed=[4, 4], **FAST)
    plain = pipe("a cup", style=None, seed=4, **FAST)
    assert np.abs(_pixels(mixed.images[1]) - _pixels(plain.images[0])).max() <= 1


def test_style_map_is_decoded_and_prepared_once_per_generation(pipe, codes, monkeypatch):
    calls = []
    decode, prepare = pipe.control_model.decode_style, pipe.control_model.prepare_style

    def counting_decode(*args, **kwargs):
        calls.append(("decode", args[0].shape))
        return decode(*args, **kwargs)

    def counting_prepare(*args, **kwargs):
        calls.append(("prepare", args[0].shape[0]))
        return prepare(*args, **kwargs)

    monkeypatch.setattr(pipe.control_model, "decode_style", counting_decode)
    monkeypatch.setattr(pipe.control_model, "prepare_style", counting_prepare)
    pipe(["a", "b"], style=codes, seed=1, width=64, height=64, num_inference_steps=5)
    assert calls == [("decode", torch.Size([2, 20])), ("prepare", 4)]  # 4: both halves of the guidance batch


def test_style_forms_code_text_latent_and_image_agree(pipe, demo_engine, codes, style_images):
    code = codes[0]
    from_object = pipe("a hill", style=code, seed=3, **FAST).images[0]
    from_text = pipe("a hill", style=code.canonical, seed=3, **FAST).images[0]
    from_latent = pipe("a hill", style=code.latent(), seed=3, **FAST)
    assert np.array_equal(_pixels(from_object), _pixels(from_text))
    assert np.array_equal(_pixels(from_object), _pixels(from_latent.images[0]))
    assert from_latent.metadata[0]["style_source"] == "latent"
    assert from_latent.metadata[0]["style_latent"] == pytest.approx(code.latent().tolist())

    image_code = demo_engine.encode([style_images[0]])[0]
    from_image = pipe("a hill", style=style_images[0], seed=3, **FAST)
    assert from_image.metadata[0]["style_code"] == image_code.canonical  # the image goes through the 6-bit code
    from_its_code = pipe("a hill", style=image_code, seed=3, **FAST)
    assert np.array_equal(_pixels(from_image.images[0]), _pixels(from_its_code.images[0]))


def test_metadata_reproduces_the_image(pipe, codes):
    out = pipe("a lamp", style=codes[1], negative_prompt="blurry", strength=0.7, seed=None, **FAST)
    meta = out.metadata[0]
    again = pipe(
        meta["prompt"],
        style=meta["style_code"],
        negative_prompt=meta["negative_prompt"],
        strength=meta["strength"],
        guidance_scale=meta["guidance_scale"],
        num_inference_steps=meta["steps"],
        seed=meta["seed"],
        width=meta["width"],
        height=meta["height"],
    )
    assert np.array_equal(_pixels(out.images[0]), _pixels(again.images[0]))
    assert meta["model_version"] == 0 and meta["scheduler"] == "DDIM"


def test_numpy_scalars_are_accepted_and_the_metadata_is_plain_json(pipe, codes):
    numpy_values = {
        "strength": np.float32(0.5),
        "guidance_scale": np.float64(2.5),
        "num_inference_steps": np.int64(2),
        "seed": np.int64(3),
        "width": np.int32(64),
        "height": np.uint16(64),
    }
    out = pipe("a", style=codes[0], **numpy_values)
    [meta] = out.metadata
    assert json.loads(json.dumps(meta)) == meta
    settings = {name: meta[name] for name in ("strength", "guidance_scale", "steps", "seed", "width", "height")}
    assert settings == {"strength": 0.5, "guidance_scale": 2.5, "steps": 2, "seed": 3, "width": 64, "height": 64}
    assert [type(value) for value in settings.values()] == [float, float, int, int, int, int]
    plain = pipe("a", style=codes[0], **{name: value.item() for name, value in numpy_values.items()})
    assert np.array_equal(_pixels(out.images[0]), _pixels(plain.images[0]))
    listed = pipe(["a", "b"], seed=[np.int64(8), np.uint32(9)], width=64, height=64, num_inference_steps=1)
    assert [m["seed"] for m in listed.metadata] == [8, 9] and all(type(m["seed"]) is int for m in listed.metadata)


def test_images_per_prompt_and_int_seed(pipe, codes):
    out = pipe(["a", "b"], style=[codes[0], None], num_images_per_prompt=2, seed=100, **FAST)
    assert len(out.images) == 4
    assert [m["seed"] for m in out.metadata] == [100, 101, 102, 103]
    assert [m["prompt"] for m in out.metadata] == ["a", "a", "b", "b"]
    assert [m["style_code"] for m in out.metadata] == [codes[0].canonical] * 2 + [None] * 2
    assert out.nsfw_content_detected == [None] * 4  # the demo has no safety checker


def test_long_prompt_is_truncated_with_a_warning(pipe):
    long_prompt = "a castle " + "very " * 20 + "ornate end"  # the demo tokenizer has one token per character
    out = pipe([long_prompt, "short"], negative_prompt=["", "x" * 100], seed=1, **FAST)
    assert len(out.warnings[0]) == 1
    assert "77 tokens" in out.warnings[0][0] and "ornate end" in out.warnings[0][0]
    assert len(out.warnings[1]) == 1 and "negative prompt" in out.warnings[1][0]
    # words beyond the window change nothing; a short prompt gets no warning
    alone = pipe(long_prompt, seed=1, **FAST)
    longer = pipe(long_prompt + " and a moat", seed=1, **FAST)
    assert np.array_equal(_pixels(alone.images[0]), _pixels(longer.images[0]))
    assert out.warnings[1] == [out.warnings[1][0]] and pipe("short", seed=1, **FAST).warnings == [[]]


@pytest.mark.parametrize(
    ("prompt", "ignored"),
    [
        # 3 UTF-8 bytes, so 3 byte-level tokens, per character: 25 of the 40 fit in the 75 text tokens.
        ("猫" * 40, "猫" * 15),
        # "sunset" is 6 tokens, each emoji 4: 17 emojis fit whole, the 18th only in part, so it counts as ignored.
        ("sunset " + "🌅🐱" * 20 + " end", ("🌅🐱" * 20)[17:] + " end"),
    ],
)
def test_long_non_ascii_prompt_is_truncated_with_a_warning(pipe, prompt, ignored):
    assert len(prompt) + 2 < 77  # fewer characters than tokens: a per-character bound would miss these
    [warnings] = pipe(prompt, seed=1, width=64, height=64, num_inference_steps=1).warnings
    assert warnings == [
        f"The prompt is longer than the text encoder's 77 tokens; this end of it was ignored: “{ignored}”."
    ]


def test_callback_gets_every_step_and_lazy_previews(pipe, codes):
    seen = []

    def on_step(step, total, make_previews):
        previews = make_previews() if step in (1, total) else None
        seen.append((step, total, None if previews is None else [p.size for p in previews]))

    pipe(["a", "b"], style=codes, seed=1, width=128, height=64, num_inference_steps=4, callback=on_step)
    assert seen == [(1, 4, [(16, 8), (16, 8)]), (2, 4, None), (3, 4, None), (4, 4, [(16, 8), (16, 8)])]


def test_latent_previews_are_small_rgb_images():
    previews = latent_previews(torch.zeros(3, 4, 8, 16))
    assert [(p.mode, p.size) for p in previews] == [("RGB", (16, 8))] * 3
    assert previews[0].getpixel((0, 0)) == (128, 128, 128)  # zero latent -> mid grey


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 65}, r"`width` must be a multiple of 8"),
        ({"height": 100}, r"`height` must be a multiple of 8.*try 96 or 104"),
        ({"width": 0}, r"`width` must be between"),
        ({"height": 4096}, r"`height` must be between"),
        ({"width": "64"}, r"`width` must be an integer"),
        ({"num_inference_steps": 0}, r"`num_inference_steps` must be between 1"),
        ({"strength": 1.6}, r"`strength` must be between 0 and 1.5"),
        ({"strength": float("nan")}, r"`strength`"),
        ({"strength": [0.5, 0.5, 0.5]}, r"`strength` must be a single value or a list of 1 .* or 1"),
        ({"guidance_scale": -1}, r"`guidance_scale`"),
        ({"seed": -1}, r"`seed` must be between 0"),
        ({"seed": 1.5}, r"`seed` must be an integer, got float 1.5"),
        ({"seed": np.float64(2)}, r"`seed` must be an integer"),
        ({"seed": "7"}, r"`seed` must be an integer, got str '7'"),
        ({"seed": [1, 2]}, r"`seed` must be a single value or a list"),
        ({"seed": [1.5]}, r"`seed` must be an integer"),
        ({"prompt": []}, r"`prompt` must be a string"),
        ({"prompt": ["ok", 3]}, r"`prompt` must be a string"),
        ({"negative_prompt": 5}, r"`negative_prompt`"),
        ({"num_images_per_prompt": 0}, r"`num_images_per_prompt`"),
    ],
)
def test_bad_arguments_are_refused_up_front(pipe, overrides, message):
    arguments = {"prompt": "a", "style": None, "seed": 1, **FAST, **overrides}
    with pytest.raises(ValueError, match=message):
        pipe(**arguments)


def test_argument_check_needs_no_model():
    with pytest.raises(ValueError, match=r"`width` must be a multiple of 8"):
        check_call_arguments(
            prompt="a", style=None, negative_prompt=None, strength=0.9, guidance_scale=3, num_inference_steps=20,
            seed=1, width=513, height=512, num_images_per_prompt=1,
        )  # fmt: skip


def test_bad_styles_are_refused(pipe):
    with pytest.raises(CodeError, match=r"Character 3"):
        pipe("a", style="AA!AAAAAAAAAAAAAAAAA0", seed=1, **FAST)
    with pytest.raises(UnservedVersionError, match=r"version 1 are not served.*0"):
        pipe("a", style="C_d_AAI_rQglIvUb1_fC1", seed=1, **FAST)
    with pytest.raises(ValueError, match=r"20 finite values"):
        pipe("a", style=np.zeros(19, dtype=np.float32), seed=1, **FAST)
    with pytest.raises(ValueError, match=r"20 finite values"):
        pipe("a", style=torch.full((20,), float("nan")), seed=1, **FAST)
    with pytest.raises(ValueError, match=r"Each `style` must be"):
        pipe("a", style=3.5, seed=1, **FAST)


def test_style_images_need_an_image_encoder(pipe):
    without_encoder = StyleCodesPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        control_model=pipe.control_model,
        scheduler=make_scheduler(),
        model_version=0,
    )
    with pytest.raises(ValueError, match=r"image_encoder"):
        without_encoder("a", style=Image.new("RGB", (32, 32)), seed=1, **FAST)


def test_non_multiple_of_64_sizes_work(pipe, codes):
    out = pipe("a", style=codes[0], seed=1, width=72, height=64, num_inference_steps=2)
    assert out.images[0].size == (72, 64)


# ------------------------------------------------------------------------------------ loading published-style files


def test_diffusers_folder_base_loads_and_matches_the_demo(published_files, monkeypatch, demo_engine, codes):
    for name, value in published_files.env().items():
        monkeypatch.setenv(name, value)
    pipeline, label, _ = loaders.load_model(published_files.spec)
    assert label == str(published_files.base_folder)
    assert pipeline.safety_checker is not None and pipeline.model_version == 1
    pipeline.set_progress_bar_config(disable=True)
    code_v1 = dataclasses.replace(codes[0], version=1)
    loaded = pipeline("a red house", style=code_v1, seed=11, **FAST)
    demo = demo_engine.pipeline("a red house", style=codes[0], seed=11, **FAST)
    assert np.array_equal(_pixels(loaded.images[0]), _pixels(demo.images[0]))  # same weights, same image
    assert isinstance(loaded.nsfw_content_detected[0], bool)


def test_safety_checker_verdict_is_returned_and_image_kept(published_files, monkeypatch):
    for name, value in published_files.env().items():
        monkeypatch.setenv(name, value)
    pipeline, _, _ = loaders.load_model(published_files.spec)
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():  # make the toy checker flag everything: every concept threshold below any similarity
        pipeline.safety_checker.concept_embeds_weights.fill_(-2.0)
    out = pipeline("a", seed=2, **FAST)
    assert out.nsfw_content_detected == [True]
    assert _pixels(out.images[0]).std() > 0  # not blacked out: the caller decides what to show


def test_pickle_checkpoint_loads_like_safetensors(published_files, monkeypatch):
    env = published_files.env(checkpoint=published_files.checkpoint_bin)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline, _, _ = loaders.load_model(published_files.spec)
    from safetensors.torch import load_file

    expected = load_file(str(published_files.checkpoint_safetensors))
    for key, value in pipeline.control_model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def _single_file_base(published_files, monkeypatch, tmp_path):
    """Point version 1's base model at a (placeholder) single-file checkpoint."""
    single = tmp_path / "my-finetune.safetensors"
    single.write_bytes(b"placeholder")
    env = published_files.env()
    env[published_files.spec.env_var("BASE_MODEL")] = str(single)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return single


def test_single_file_base_loads_through_diffusers_without_a_safety_checker(
    published_files, monkeypatch, tmp_path, demo_engine
):
    # A real SD1.5 single file cannot be made offline (diffusers only converts original-format files *to* diffusers),
    # so diffusers' own `from_single_file` runs with only its file reading and per-component conversion replaced:
    # the keyword handling that decides whether a safety checker is loaded (or downloaded) is the real one.
    from diffusers.loaders import single_file

    single = _single_file_base(published_files, monkeypatch, tmp_path)
    demo = demo_engine.pipeline
    parts = {"vae": demo.vae, "text_encoder": demo.text_encoder, "tokenizer": demo.tokenizer, "unet": demo.unet}
    parts["scheduler"] = make_scheduler()
    read, converted = [], []

    def read_checkpoint(path, **kwargs):
        read.append(path)
        return {"state_dict": {}}

    def convert(*, name, **kwargs):
        converted.append(name)
        return parts.get(name)  # (None for anything this test does not expect; the list below names it)

    def legacy_safety_checker(*args, **kwargs):
        raise AssertionError("diffusers' deprecated safety-checker loader ran (it downloads CompVis' checker)")

    monkeypatch.setattr(single_file, "load_single_file_checkpoint", read_checkpoint)
    config = {"pretrained_model_name_or_path": str(published_files.base_folder)}  # configs from the SD1.5 folder
    monkeypatch.setattr(single_file, "fetch_diffusers_config", lambda checkpoint: config)
    monkeypatch.setattr(single_file, "load_single_file_sub_model", convert)
    monkeypatch.setattr(single_file, "_legacy_load_safety_checker", legacy_safety_checker)
    pipeline, label, _ = loaders.load_model(published_files.spec)
    assert read == [str(single)]
    assert sorted(converted) == ["scheduler", "text_encoder", "tokenizer", "unet", "vae"]  # no checker, no extractor
    assert label == str(single) and pipeline.safety_checker is None and pipeline.feature_extractor is None
    assert pipeline.unet is demo.unet


def test_single_file_missing_a_component_is_a_model_load_error(published_files, monkeypatch, tmp_path):
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    from stylecodes.hub import ModelLoadError

    single = _single_file_base(published_files, monkeypatch, tmp_path)

    def incomplete(path, **kwargs):
        raise SingleFileComponentError(
            "Failed to load CLIPTextModel. Weights for this component appear to be missing in the checkpoint.\n"
            "Please load the component before passing it in as an argument to `from_single_file`.\n"
        )

    monkeypatch.setattr("diffusers.StableDiffusionPipeline.from_single_file", incomplete)
    with pytest.raises(ModelLoadError) as error:
        loaders.load_model(published_files.spec)
    message = str(error.value)
    assert str(single) in message and "Failed to load CLIPTextModel" in message and "diffusers folder" in message
    assert "from_single_file" not in message  # diffusers' code recipe is for developers, not for users
