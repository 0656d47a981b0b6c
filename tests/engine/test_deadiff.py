"""The DEADiff port against the original's numbers (tests/data/deadiff_golden), end to end: the released
checkpoint's layout -> converter -> DEADiffModel -> style tokens -> processors on a diffusers UNet -> noise."""

from __future__ import annotations

import pytest
import torch

from stylecodes.models.deadiff.attention import CONTENT_LAYERS, DEADiffAttnProcessor, cross_attentions
from stylecodes.models.deadiff.convert import convert_deadiff_checkpoint
from stylecodes.models.deadiff.model import SD15_INNER_DIMS, DEADiffModel
from tests.engine.deadiff_support import Golden, load_golden, save_lightning_checkpoint

ATOL = 1e-4  # the bound on the difference from the original implementation; never loosen it


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


@pytest.fixture(scope="module")
def model(golden, tmp_path_factory) -> DEADiffModel:
    folder = tmp_path_factory.mktemp("deadiff")
    source = save_lightning_checkpoint(golden.checkpoint, folder / "deadiff_tiny.ckpt")
    convert_deadiff_checkpoint(source, folder / "deadiff_tiny.safetensors", **golden.convert_kwargs())
    return DEADiffModel.from_file(folder / "deadiff_tiny.safetensors")


@pytest.fixture(scope="module")
def unet(golden):
    return golden.unet()


@pytest.fixture(scope="module")
def style_tokens(model, golden) -> torch.Tensor:
    return model.style_encoder.encode(golden.reference_images())


def test_clip_features_match_the_original(model, golden):
    encoder = model.style_encoder
    pixels = encoder.pixel_values(golden.reference_images())
    with torch.no_grad():
        features = encoder.ln_vision(encoder.vision(pixel_values=pixels).last_hidden_state)
    torch.testing.assert_close(features, golden.data["output.clip_image_embeds"], atol=ATOL, rtol=0)


def test_style_tokens_match_the_original(style_tokens, golden):
    assert style_tokens.shape == (2, 16, 32)
    torch.testing.assert_close(style_tokens, golden.data["output.style_tokens"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("weight", [1.0, 0.6])
def test_noise_prediction_matches_the_original(model, unet, golden, style_tokens, weight):
    latents, timesteps, text = golden.guidance_batch()
    # the negative prompt's rows get no image (zeros), as DEADiff's sampler gives them
    tokens = torch.cat([torch.zeros_like(style_tokens), style_tokens])
    with torch.no_grad(), model.applied(unet, model.conditioning(tokens, weight)):
        noise = unet(latents, timesteps, text).sample
    expected = golden.data[f"output.noise_pred_w{weight:g}"]
    torch.testing.assert_close(noise, expected, atol=ATOL, rtol=0)
    with torch.no_grad():
        plain = unet(latents, timesteps, text).sample  # processors restored: the plain UNet again
    assert (plain - expected).abs().max() > 0.5  # so the match above depends on the DEADiff path


def test_rows_without_deadiff_get_the_plain_unet(model, unet, golden, style_tokens):
    latents, timesteps, text = golden.guidance_batch()
    tokens = torch.cat([torch.zeros_like(style_tokens), style_tokens])
    rows = torch.tensor([True, False, True, False])  # the second sample is not DEADiff-styled
    with torch.no_grad():
        plain = unet(latents, timesteps, text).sample
        with model.applied(unet, model.conditioning(tokens, 1.0, rows)):
            mixed = unet(latents, timesteps, text).sample
    torch.testing.assert_close(mixed[rows], golden.data["output.noise_pred_w1"][rows], atol=ATOL, rtol=0)
    # the image keys are masked out of their softmax: the plain UNet's attention, through another SDPA kernel
    torch.testing.assert_close(mixed[~rows], plain[~rows], atol=1e-5, rtol=0)
    assert (mixed[~rows] - golden.data["output.noise_pred_w1"][~rows]).abs().max() > 0.5


def test_processors_are_put_back_even_when_the_step_fails(model, unet, style_tokens):
    before = {name: attn.processor for name, attn in cross_attentions(unet)}
    conditioning = model.conditioning(torch.cat([style_tokens] * 2), 1.0)
    with pytest.raises(RuntimeError, match="boom"), model.applied(unet, conditioning):
        assert all(isinstance(attn.processor, DEADiffAttnProcessor) for _, attn in cross_attentions(unet))
        raise RuntimeError("boom")
    assert {name: attn.processor for name, attn in cross_attentions(unet)} == before


def test_a_batch_size_the_conditioning_was_not_made_for_is_refused(model, unet, golden, style_tokens):
    latents, timesteps, text = golden.guidance_batch()
    with model.applied(unet, model.conditioning(style_tokens, 1.0)), pytest.raises(ValueError, match="batch of 2"):
        unet(latents, timesteps, text)


def test_style_and_content_layers_follow_the_paper_on_sd15():
    """Not runnable against the original at full size: the split the paper describes (coarse, low-resolution layers
    take semantics; fine, high-resolution layers take style), as DEADiff's config numbers it, on SD1.5's layout."""
    from diffusers import UNet2DConditionModel

    from stylecodes.models.sd15 import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    layers = list(cross_attentions(unet))
    assert [attn.inner_dim for _, attn in layers] == SD15_INNER_DIMS
    content = [layers[index][0] for index in CONTENT_LAYERS]
    assert content == [
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2",
        "down_blocks.2.attentions.1.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
    ]
    assert all(attn.inner_dim == 1280 for index, (_, attn) in enumerate(layers) if index in CONTENT_LAYERS)
    style_dims = {attn.inner_dim for index, (_, attn) in enumerate(layers) if index not in CONTENT_LAYERS}
    assert style_dims == {320, 640, 1280}  # the 64x64, 32x32 layers and the last 16x16 one read the style


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.conditioning(torch.zeros(2, 16, 31), 1.0), r"`tokens` must be a \(batch, 16, 32\)"),
        (lambda m: m.conditioning(torch.zeros(2, 16, 32), torch.ones(3)), r"`weight` must be a float or a \(2,\)"),
        (lambda m: m.conditioning(torch.zeros(2, 16, 32), 1.0, torch.ones(3)), r"`rows` must be a \(2,\) bool"),
        (lambda m: m.style_encoder.encode([]), "`images` is empty"),
        (lambda m: m.style_encoder.encode(["a.png"]), "must be PIL images"),
    ],
)
def test_bad_inputs_name_the_argument(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_a_unet_of_another_layout_is_refused(model, golden):
    from diffusers import UNet2DConditionModel

    config = {**golden.unet_config(), "layers_per_block": 1}  # 10 cross-attentions instead of 16
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    with pytest.raises(ValueError, match="16 cross-attention layers"):
        model.install(unet, model.conditioning(torch.zeros(1, 16, 32), 1.0))
