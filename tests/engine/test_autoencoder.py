"""The attention autoencoder against the published implementation's numbers (tests/data/reference/golden_tiny)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stylecodes.models.autoencoder import StyleAutoencoder

PREFIX = "sref_autoencoder."


@pytest.fixture(scope="module")
def golden(reference_dir):
    folder = reference_dir / "golden_tiny"
    config = json.loads((folder / "golden.json").read_text())["autoencoder"]
    weights = load_file(folder / "stylecodes_control.safetensors")
    state_dict = {key.removeprefix(PREFIX): value for key, value in weights.items() if key.startswith(PREFIX)}
    model = StyleAutoencoder(**config)
    model.load_state_dict(state_dict, strict=True)
    return model, state_dict, load_file(folder / "io.safetensors")


def test_encode_reproduces_published_style_latent(golden):
    model, _, io = golden
    with torch.no_grad():
        latent = model.encode(io["siglip_hidden_states"])
    assert latent.shape == (2, 20)
    torch.testing.assert_close(latent, io["style_latent"], atol=1e-4, rtol=0)


def test_fresh_positional_table_equals_the_published_buffer(golden):
    _, state_dict, _ = golden
    fresh = StyleAutoencoder(input_dim=48, output_dim=64, d_model=32, num_heads=4).pos_encoder.pe
    assert fresh.shape == state_dict["pos_encoder.pe"].shape == (1, 5000, 32)
    torch.testing.assert_close(fresh, state_dict["pos_encoder.pe"], atol=1e-5, rtol=0)


def test_decode_lays_positions_out_row_major(golden):
    model, _, io = golden
    with torch.no_grad():
        wide = model.decode(io["style_latent"], 2, 3)  # (B, 64, 2, 3)
        strip = model.decode(io["style_latent"], 1, 6)  # the same 6 positions in one row
    assert wide.shape == (2, 64, 2, 3)
    torch.testing.assert_close(wide.flatten(2), strip.flatten(2), atol=1e-6, rtol=0)
    # The map really depends on the latent (the two samples differ) and on the position.
    assert not torch.allclose(wide[0], wide[1])
    assert not torch.allclose(wide[0, :, 0, 0], wide[0, :, 1, 2])


def test_decode_is_deterministic_without_calling_eval(golden):
    model = StyleAutoencoder(input_dim=48, output_dim=64, d_model=32, num_heads=4)  # fresh, never put in eval
    latent = torch.randn(2, 20)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(latent, 4, 4), model.decode(latent, 4, 4), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda model: model.encode(torch.randn(1, 196, 47)), "hidden_states"),
        (lambda model: model.encode(torch.randn(196, 48)), "hidden_states"),
        (lambda model: model.encode(torch.randn(1, 5001, 48)), "hidden_states"),
        (lambda model: model.decode(torch.randn(1, 19), 2, 2), "latent"),
        (lambda model: model.decode(torch.randn(20), 2, 2), "latent"),
        (lambda model: model.decode(torch.randn(1, 20), 0, 2), "height"),
        (lambda model: model.decode(torch.randn(1, 20), 100, 100), "height"),
    ],
)
def test_bad_inputs_name_the_argument(golden, call, argument):
    model, _, _ = golden
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call(model)


def test_config_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="num_heads"):
        StyleAutoencoder(d_model=30, num_heads=4)
