"""The control module: checkpoint layout (on the meta device) and numerical equivalence with the published forward."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from stylecodes import codec
from stylecodes.checkpoint import check_state_dict
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.sd15 import SD15_UNET_CONFIG

ATOL = 1e-4  # the bound on the difference from the published implementation; never loosen it


@dataclass
class Golden:
    unet: UNet2DConditionModel
    model: StyleCodesControlModel
    io: dict[str, torch.Tensor]
    timestep: int
    scale: float
    codes: list[str]


@pytest.fixture(scope="module")
def golden(reference_dir) -> Golden:
    folder = reference_dir / "golden_tiny"
    meta = json.loads((folder / "golden.json").read_text())
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    auto = meta["autoencoder"]
    assert auto["output_dim"] == unet.config.block_out_channels[-1]
    model = StyleCodesControlModel.from_unet(
        unet,
        autoencoder_input_dim=auto["input_dim"],
        d_model=auto["d_model"],
        num_heads=auto["num_heads"],
        num_layers=auto["num_layers"],
        latent_dim=auto["latent_dim"],
        decoder_layers=auto["decoder_layers"],
    )
    model.load_state_dict(load_file(folder / "stylecodes_control.safetensors"), strict=True)
    io = load_file(folder / "io.safetensors")
    return Golden(unet, model, io, meta["timestep"], meta["conditioning_scale"], meta["legacy_codes"])


def _latents(codes: list[codec.StyleCode]) -> torch.Tensor:
    return torch.from_numpy(np.stack([code.latent() for code in codes]))  # (B, 20)


def _reference_shapes(reference_dir) -> dict[str, tuple[tuple[int, ...], str]]:
    shapes = {}
    for line in (reference_dir / "sd15_v1_checkpoint_keys.tsv").read_text().splitlines():
        name, shape, dtype = line.split("\t")
        shapes[name] = (tuple(int(size) for size in shape.strip("()").split(",") if size.strip()), dtype)
    return shapes


# ----------------------------------------------------------------------------------------------- checkpoint layout


def test_sd15_state_dict_has_exactly_the_published_keys_shapes_and_dtypes(reference_dir):
    reference = _reference_shapes(reference_dir)
    assert len(reference) == 517
    with torch.device("meta"):  # 675M parameters, none allocated
        model = StyleCodesControlModel.from_unet_config(SD15_UNET_CONFIG)
    state_dict = model.state_dict()
    assert all(tensor.is_meta for tensor in state_dict.values())
    assert sorted(state_dict) == sorted(reference)
    built = {name: (tuple(tensor.shape), str(tensor.dtype)) for name, tensor in state_dict.items()}
    assert built == reference
    assert sum(tensor.numel() for tensor in state_dict.values()) == sum(
        int(np.prod(shape)) for shape, _ in reference.values()
    )
    # A checkpoint of exactly that shape list loads with strict key checking.
    published = {name: torch.empty(shape, dtype=torch.float32, device="meta") for name, (shape, _) in reference.items()}
    check_state_dict(model, published, source="published checkpoint")
    model.load_state_dict(published, strict=True, assign=True)


def test_sd15_control_stream_uses_the_base_time_embedding_and_text_width():
    with torch.device("meta"):
        model = StyleCodesControlModel.from_unet_config(SD15_UNET_CONFIG)
    assert model.config.time_embed_dim == 1280
    assert model.mid_block_size(64, 64) == (8, 8)
    assert model.mid_block_size(65, 40) == (9, 5)  # odd sizes round up, like the UNet's strided convs
    assert model.autoencoder.config.output_dim == 1280
    attention = model.control_model.up_blocks[3].attentions[0]
    assert attention.transformer_blocks[0].attn2.heads == 8


# -------------------------------------------------------------------------------------------- numerical equivalence


def test_eps_from_each_code_matches_the_published_forward(golden: Golden):
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    outputs = []
    with torch.no_grad():
        for index, legacy in enumerate(golden.codes):
            latent = _latents([codec.parse_code(legacy)])  # (1, 20)
            style_map = golden.model.decode_style(latent, 16, 16)  # (1, 64, 2, 2)
            outputs.append(
                golden.model(
                    golden.unet,
                    sample[index : index + 1],
                    golden.timestep,
                    text[index : index + 1],
                    style_map,
                    golden.scale,
                )
            )
    eps = torch.cat(outputs)
    torch.testing.assert_close(eps, golden.io["eps_from_code"], atol=ATOL, rtol=0)
    # The style really steers the output: far from the plain UNet.
    assert (eps - golden.io["eps_plain_unet"]).abs().max() > 100 * ATOL


def test_eps_from_image_matches_the_published_forward_through_the_code(golden: Golden):
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    with torch.no_grad():
        latent = golden.model.autoencoder.encode(golden.io["siglip_hidden_states"])  # (2, 20)
        codes = [codec.code_from_latent(row.numpy(), version=1) for row in latent]
        assert [code.legacy for code in codes] == golden.codes
        style_map = golden.model.decode_style(_latents(codes), 16, 16)
        eps = golden.model(golden.unet, sample, golden.timestep, text, style_map, golden.scale)
    torch.testing.assert_close(eps, golden.io["eps_from_image"], atol=ATOL, rtol=0)


def test_no_style_gives_the_plain_unet(golden: Golden):
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    with torch.no_grad():
        plain = golden.unet(sample, golden.timestep, text).sample
        style_map = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 16, 16)
        without_map = golden.model(golden.unet, sample, golden.timestep, text, None)
        zero_scale = golden.model(golden.unet, sample, golden.timestep, text, style_map, 0.0)
    torch.testing.assert_close(plain, golden.io["eps_plain_unet"], atol=ATOL, rtol=0)
    assert torch.equal(without_map, plain)
    assert torch.equal(zero_scale, plain)


def test_mixed_batch_each_sample_has_its_own_map_and_scale(golden: Golden):
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    maps = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 16, 16)
    with torch.no_grad():
        plain = golden.unet(sample, golden.timestep, text).sample
        # Sample 0 unstyled (scale 0, zero map), sample 1 styled.
        no_style = torch.stack([torch.zeros_like(maps[0]), maps[1]])
        mixed = golden.model(golden.unet, sample, golden.timestep, text, no_style, torch.tensor([0.0, golden.scale]))
        # Both styled, each with its own strength: same as running them one at a time.
        scales = torch.tensor([0.4, golden.scale])
        batched = golden.model(golden.unet, sample, golden.timestep, text, maps, scales)
        singles = [
            golden.model(golden.unet, sample[i : i + 1], golden.timestep, text[i : i + 1], maps[i : i + 1], float(s))
            for i, s in enumerate(scales)
        ]
    assert torch.equal(mixed[0], plain[0])
    torch.testing.assert_close(mixed[1], golden.io["eps_from_image"][1], atol=ATOL, rtol=0)
    torch.testing.assert_close(batched, torch.cat(singles), atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], golden.io["eps_from_image"][1], atol=ATOL, rtol=0)
    assert not torch.allclose(batched[0], golden.io["eps_from_image"][0], atol=ATOL)  # 0.4 is not 0.9


def test_forward_works_with_autograd_enabled(golden: Golden):
    """No in-place or `out=` tricks that break when gradients are tracked (e.g. someone fine-tuning)."""
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    style_map = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 16, 16)
    eps = golden.model(golden.unet, sample, golden.timestep, text, style_map, golden.scale)
    assert eps.requires_grad
    torch.testing.assert_close(eps.detach(), golden.io["eps_from_image"], atol=ATOL, rtol=0)


def test_forward_never_decodes_the_style_again(golden: Golden, monkeypatch):
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    style_map = golden.model.decode_style(_latents([codec.parse_code(golden.codes[0])] * 2), 16, 16)

    def fail(*args, **kwargs):
        raise AssertionError("the style map must be decoded once per generation, not per step")

    monkeypatch.setattr(golden.model.sref_autoencoder, "decode", fail)
    monkeypatch.setattr(golden.model.sref_autoencoder, "encode", fail)
    with torch.no_grad():
        for timestep in (901, 537, 21):
            eps = golden.model(golden.unet, sample, timestep, text, style_map, golden.scale)
            assert eps.shape == sample.shape


def test_sample_sizes_that_are_not_multiples_of_eight(golden: Golden):
    sample = torch.randn(2, 4, 12, 20, generator=torch.Generator().manual_seed(0))
    text = golden.io["encoder_hidden_states"]
    style_map = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 12, 20)
    assert style_map.shape == (2, 64, 2, 3)
    with torch.no_grad():
        plain = golden.unet(sample, golden.timestep, text).sample
        eps = golden.model(golden.unet, sample, golden.timestep, text, style_map, torch.tensor([0.0, 0.9]))
    assert eps.shape == sample.shape
    assert torch.equal(eps[0], plain[0])
    assert not torch.allclose(eps[1], plain[1], atol=ATOL)


# ------------------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"style_map": torch.zeros(1, 64, 2, 2)}, "style_map"),  # batch mismatch
        ({"style_map": torch.zeros(2, 64, 4, 4)}, "style_map"),  # not the mid-block resolution
        ({"style_map": torch.zeros(2, 32, 2, 2)}, "style_map"),  # not the mid-block width
        ({"conditioning_scale": torch.ones(3)}, "conditioning_scale"),
        ({"conditioning_scale": torch.ones(2, 1)}, "conditioning_scale"),
        ({"conditioning_scale": float("nan")}, "conditioning_scale"),
        ({"conditioning_scale": "strong"}, "conditioning_scale"),
        ({"encoder_hidden_states": torch.zeros(1, 8, 32)}, "encoder_hidden_states"),
        ({"sample": torch.zeros(4, 16, 16)}, "sample"),
        ({"style_map": [torch.zeros(64, 2, 2)] * 2}, "style_map"),
        ({"style_map": torch.zeros(1, 64, 2, 2), "conditioning_scale": 0.0}, "style_map"),  # unstyled, still checked
    ],
)
def test_bad_forward_inputs_name_the_argument(golden: Golden, change, argument):
    arguments = {
        "sample": golden.io["sample"],
        "timestep": golden.timestep,
        "encoder_hidden_states": golden.io["encoder_hidden_states"],
        "style_map": torch.zeros(2, 64, 2, 2),
        "conditioning_scale": 0.9,
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        golden.model(golden.unet, **arguments)


@pytest.mark.parametrize("style_map", [None, "map"])
def test_sample_channels_and_text_width_must_fit_the_unet(golden: Golden, style_map):
    maps = {None: None, "map": torch.zeros(2, 64, 2, 2)}[style_map]  # checked on the plain path too
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    with pytest.raises(ValueError, match=r"`sample` must be a \(batch, 4, height, width\).*got \(2, 3, 16, 16\)"):
        golden.model(golden.unet, sample[:, :3], golden.timestep, text, maps, 0.9)
    with pytest.raises(ValueError, match=r"`encoder_hidden_states` must have 32 features.*cross_attention_dim.*got 16"):
        golden.model(golden.unet, sample, golden.timestep, text[..., :16], maps, 0.9)


def test_decode_style_rejects_a_wrong_latent_width(golden: Golden):
    with pytest.raises(ValueError, match="`latent`"):
        golden.model.decode_style(torch.zeros(1, 21), 16, 16)


def test_decode_style_names_a_numpy_latent_and_how_to_convert_it(golden: Golden):
    with pytest.raises(ValueError, match=r"`latent` must be a \(batch, 20\) torch tensor.*torch\.from_numpy.*ndarray"):
        golden.model.decode_style(np.zeros((1, 20), dtype=np.float32), 16, 16)
    with pytest.raises(ValueError, match=r"`sample_height` and `sample_width`.*must be positive"):
        golden.model.decode_style(torch.zeros(1, 20), 0, 16)


# ------------------------------------------------------------------------------------------ styles prepared once


def test_prepared_style_gives_the_same_output_as_raw_maps(golden: Golden):
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    maps = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 16, 16)
    with torch.no_grad():
        for scale in (golden.scale, torch.tensor([0.0, golden.scale]), torch.tensor([0.4, golden.scale])):
            prepared = golden.model.prepare_style(maps, scale)
            raw = golden.model(golden.unet, sample, golden.timestep, text, maps, scale)
            assert torch.equal(golden.model(golden.unet, sample, golden.timestep, text, prepared), raw)
    assert golden.model.prepare_style(maps, torch.zeros(2)) is None  # nothing styled: the plain UNet's steps
    only_second = golden.model.prepare_style(maps, torch.tensor([0.0, 0.5]))
    assert only_second.rows.tolist() == [1] and only_second.batch_size == 2
    assert torch.equal(only_second.style_map, maps[1:]) and only_second.scale.flatten().tolist() == [0.5]
    assert golden.model.prepare_style(maps, 0.5).rows is None  # every row styled: no gather needed


def test_steps_with_a_prepared_style_never_wait_for_the_device(golden: Golden, monkeypatch):
    """Per step, nothing is read back to the host and no small tensor is built from Python values (on a GPU each
    would wait for the queued work). Checked on the CPU by making every such call fail once the style is prepared."""
    sample, text = golden.io["sample"], golden.io["encoder_hidden_states"]
    maps = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 16, 16)
    timestep = torch.tensor(golden.timestep)
    with torch.no_grad():
        prepared = golden.model.prepare_style(maps, torch.tensor([0.0, golden.scale]))
        expected = golden.model(golden.unet, sample, timestep, text, prepared)  # also fills the index caches

        def read_back(*args, **kwargs):
            raise AssertionError("a denoising step read a tensor back to the host or built one from Python values")

        for name in ("__bool__", "item", "tolist", "nonzero", "cpu", "numpy"):
            monkeypatch.setattr(torch.Tensor, name, read_back)
        monkeypatch.setattr(torch, "tensor", read_back)
        eps = golden.model(golden.unet, sample, timestep, text, prepared)
    monkeypatch.undo()
    assert torch.equal(eps, expected)


def test_prepared_style_takes_no_second_scale(golden: Golden):
    maps = golden.model.decode_style(_latents([codec.parse_code(c) for c in golden.codes]), 16, 16)
    prepared = golden.model.prepare_style(maps, golden.scale)
    with pytest.raises(ValueError, match=r"`conditioning_scale` must be None with a prepared style.*prepare_style"):
        golden.model(golden.unet, golden.io["sample"], 1, golden.io["encoder_hidden_states"], prepared, 0.5)
    with pytest.raises(ValueError, match=r"`style_map` must have shape \(4, 64, 2, 2\)"):  # batch of 4, maps of 2
        sample, text = torch.cat([golden.io["sample"]] * 2), torch.cat([golden.io["encoder_hidden_states"]] * 2)
        golden.model(golden.unet, sample, 1, text, prepared)


def test_a_unet_of_another_layout_is_refused(golden: Golden):
    other = UNet2DConditionModel(**{**golden.unet.config, "block_out_channels": (32, 32, 64, 128)})
    with pytest.raises(ValueError, match="`unet`"):
        golden.model(other, golden.io["sample"], 1, golden.io["encoder_hidden_states"], torch.zeros(2, 64, 2, 2), 0.9)


def test_unsupported_unet_features_are_refused():
    with pytest.raises(ValueError, match="class_embed_type"):
        StyleCodesControlModel.from_unet_config({**SD15_UNET_CONFIG, "class_embed_type": "timestep"})
    with pytest.raises(TypeError, match="latent_size"):
        StyleCodesControlModel.from_unet_config(SD15_UNET_CONFIG, latent_size=20)
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        StyleCodesControlModel.from_unet(SD15_UNET_CONFIG)


# -------------------------------------------------------------------------------- control stream without zero skips


@pytest.mark.parametrize(("height", "width"), [(5, 7), (2, 3), (1, 1), (3, 2)])
@pytest.mark.parametrize(("channels", "skip_channels"), [(64, 32), (64, 64), (40, 56)])
def test_resnet_on_zero_skip_equals_concatenating_zeros(height, width, channels, skip_channels):
    """The shortcut for the control up blocks (zeros in place of skips) against the direct computation.

    Channel counts include GroupNorm groups that mix real and zero channels (64 + 32 in groups of 3).
    """
    from diffusers.models.resnet import ResnetBlock2D

    from stylecodes.models.zero_skip import _is_plain_resnet, resnet_on_zero_skip

    generator = torch.Generator().manual_seed(height * 100 + channels + skip_channels)
    resnet = ResnetBlock2D(in_channels=channels + skip_channels, out_channels=64, temb_channels=16, groups=32).eval()
    assert _is_plain_resnet(resnet)  # the shortcut is taken, not the fallback
    with torch.no_grad():
        for parameter in resnet.parameters():  # non-trivial norm affines, so every term matters
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        hidden = torch.randn(2, channels, height, width, generator=generator) * 2 + 0.5
        temb = torch.randn(2, 16, generator=generator)
        zeros = torch.zeros(2, skip_channels, height, width)
        expected = resnet(torch.cat([hidden, zeros], dim=1), temb)
        actual = resnet_on_zero_skip(resnet, hidden, skip_channels, temb)
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-5)
