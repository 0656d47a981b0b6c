"""Image -> code: the pinned published preprocessing, determinism, and encoder-only loading (never the UNet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylecodes.checkpoint import CheckpointError
from stylecodes.loaders import load_style_image_encoder
from stylecodes.models.autoencoder import StyleAutoencoder
from stylecodes.models.image_encoder import (
    StyleImageEncoder,
    load_autoencoder,
    make_siglip_processor,
    siglip_hidden_states,
)
from stylecodes.models.precision import keep_float32
from stylecodes.versions import VERSIONS


@pytest.fixture(scope="module")
def demo_encoder() -> StyleImageEncoder:
    return load_style_image_encoder(VERSIONS[0])


def test_processor_is_the_pinned_pil_backend_with_siglip_settings():
    import transformers

    processor = make_siglip_processor()
    # transformers 5 has a torchvision and a PIL backend and the PIL one is chosen on purpose; in transformers 4 the
    # one SigLIP processor is the PIL/numpy one.
    major = int(transformers.__version__.split(".")[0])
    assert type(processor).__name__ == ("SiglipImageProcessorPil" if major >= 5 else "SiglipImageProcessor")
    assert processor.size == {"height": 224, "width": 224}
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.5] * 3


def test_keep_float32_moves_but_never_casts():
    module = keep_float32(torch.nn.Linear(3, 2).to(torch.bfloat16))  # converted up when pinned
    assert module.weight.dtype == torch.float32
    weight = module.weight.detach().clone()
    module.half().to(torch.bfloat16).to("cpu", torch.float16).double()
    assert module.weight.dtype == torch.float32 and torch.equal(module.weight, weight)  # no precision lost either
    module.to("meta", torch.float16)
    assert module.weight.device.type == "meta" and module.weight.dtype == torch.float32  # the move still happens


def test_preprocessing_is_resize_512_then_siglip(demo_encoder, style_images):
    image = style_images[0]
    pixels = demo_encoder.pixel_values([image])  # (1, 3, 224, 224)
    # The published steps by hand: bicubic 512x512, bicubic 224x224, [0, 1], (x - 0.5) / 0.5.
    step = image.resize((512, 512), Image.Resampling.BICUBIC).resize((224, 224), Image.Resampling.BICUBIC)
    expected = (np.asarray(step, dtype=np.float32) / 255 - 0.5) / 0.5
    assert pixels.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_early_exit_gives_the_second_to_last_hidden_states(demo_encoder, style_images):
    pixels = demo_encoder.pixel_values(style_images)
    with torch.inference_mode():
        reference = demo_encoder.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        early = siglip_hidden_states(demo_encoder.vision_model, pixels)
    assert early.shape == (2, 196, demo_encoder.autoencoder.config.input_dim)
    assert torch.equal(early, reference)
    # and the model is left as it was: a normal forward pass runs to the end
    assert demo_encoder.vision_model(pixel_values=pixels).last_hidden_state.shape == reference.shape


def test_same_image_same_code_and_batching_does_not_change_codes(demo_encoder, style_images):
    first = demo_encoder.encode(style_images)
    again = demo_encoder.encode(style_images)
    singles = [demo_encoder.encode([image])[0] for image in style_images]
    assert first == again == singles
    assert all(code.version == 0 for code in first)
    assert first[0] != first[1]  # different pictures, different codes
    fresh = load_style_image_encoder(VERSIONS[0])  # a second build of the demo model gives the same codes
    assert fresh.encode(style_images) == first


def test_encoder_refuses_bad_inputs(demo_encoder):
    with pytest.raises(ValueError, match=r"`images` is empty"):
        demo_encoder.encode([])
    with pytest.raises(ValueError, match=r"must be PIL images"):
        demo_encoder.encode([b"not decoded"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"expects 768-wide tokens"):
        StyleImageEncoder(demo_encoder.vision_model, StyleAutoencoder(input_dim=768, d_model=32), version=0)


@pytest.mark.parametrize("checkpoint_kind", ["safetensors", "bin"])
def test_published_encoder_loads_siglip_and_autoencoder_only(
    published_files, monkeypatch, demo_encoder, style_images, checkpoint_kind
):
    checkpoint = getattr(published_files, f"checkpoint_{checkpoint_kind}")
    env = published_files.env(checkpoint=checkpoint)
    env[published_files.spec.env_var("BASE_MODEL")] = "/nonexistent/sd15"  # never resolved when only encoding
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def no_unet(*args, **kwargs):
        raise AssertionError("encoding built a UNet")

    monkeypatch.setattr("diffusers.UNet2DConditionModel.__init__", no_unet)
    monkeypatch.setattr("stylecodes.models.control.StyleCodesControlModel.__init__", no_unet)
    encoder = load_style_image_encoder(published_files.spec)
    codes = encoder.encode(style_images)
    assert [code.version for code in codes] == [1, 1]
    assert [code.levels for code in codes] == [code.levels for code in demo_encoder.encode(style_images)]


def test_autoencoder_weights_need_the_prefix(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"control_model.x": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=r"no `sref_autoencoder\.\*` tensors"):
        load_autoencoder(path, "sref_autoencoder.", input_dim=8)


def test_autoencoder_weights_must_fit(published_files):
    with pytest.raises(CheckpointError, match=r"wrong shape"):
        load_autoencoder(published_files.checkpoint_safetensors, "sref_autoencoder.", input_dim=48, d_model=64)


def test_autoencoder_output_width_is_read_from_the_checkpoint(published_files):
    autoencoder = load_autoencoder(
        published_files.checkpoint_bin, "sref_autoencoder.", input_dim=48, d_model=32, num_heads=4
    )
    assert autoencoder.config.output_dim == 64  # the demo UNet's mid-block width


def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path):
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"definitely not a torch pickle")
    with pytest.raises(CheckpointError):
        load_autoencoder(broken, "sref_autoencoder.", input_dim=8)


def test_full_siglip_model_folder_loads_as_the_vision_tower(tmp_path):
    # google/siglip-base-patch16-224 is a full SigLIP (text + vision); its vision half must load from that folder.
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

    from stylecodes.models.image_encoder import load_vision_model

    vision = SiglipVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
    text = SiglipTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, vocab_size=99,
        bos_token_id=None, eos_token_id=None, pad_token_id=1,
    )  # fmt: skip
    full = SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())).eval()
    full.save_pretrained(tmp_path / "siglip")
    tower = load_vision_model(tmp_path / "siglip")
    pixels = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        expected = full.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        assert torch.equal(siglip_hidden_states(tower, pixels), expected)
