"""The training loop on tiny components: learning, frozen parts, checkpoints, resume, bad input, NaN, signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from stylecodes.training import data
from stylecodes.training import train as train_module
from stylecodes.training.data import Collate, ProceduralDataset
from stylecodes.training.diffusion import make_noise_scheduler
from stylecodes.training.parts import init_new_layers, load_parts
from stylecodes.training.train import TrainingError, latest_checkpoint, quantize_straight_through, train, training_loss
from tests.training.conftest import tiny_config, tiny_parts


def fixed_batch(rows: int = 4) -> data.BatchOf:
    dataset = ProceduralDataset(seed=3)
    return Collate(64)([dataset[i] for i in range(rows)])


def test_paper_initialisation_leaves_the_base_unchanged():
    parts = tiny_parts()
    control = parts.control_model
    sample, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    style_map = control.decode_style(torch.randn(2, 20), 8, 8)
    with torch.no_grad():
        plain = parts.unet(sample, 10, text).sample
        steered = control(parts.unet, sample, 10, text, style_map, 1.0)
    torch.testing.assert_close(steered, plain, rtol=1e-5, atol=1e-5)  # zero residual: the base is untouched
    weights = control.sref_autoencoder.input_proj.weight
    assert 0.5e-4 < weights.std().item() < 2e-4  # new layers: white noise, sigma 1e-4


def test_a_few_steps_lower_the_loss_on_a_fixed_batch_and_only_the_trained_parts_change():
    parts = tiny_parts()
    config = tiny_config(Path("/unused"), Path("/unused"))  # only the loss settings are read
    frozen_before = [{k: v.clone() for k, v in m.state_dict().items()} for m in parts.frozen]
    optimizer = torch.optim.AdamW(parts.control_model.parameters(), lr=1e-3)
    batch, scheduler = fixed_batch(), make_noise_scheduler()
    losses, autoencoder_grads = [], []
    for _ in range(8):
        loss = training_loss(parts, batch, config, torch.Generator().manual_seed(0), scheduler)  # same noise
        optimizer.zero_grad()
        loss.backward()
        autoencoder = parts.control_model.sref_autoencoder.parameters()
        autoencoder_grads.append(sum(p.grad.abs().sum().item() for p in autoencoder if p.grad is not None))
        for module in parts.frozen:
            assert all(p.grad is None and not p.requires_grad for p in module.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert autoencoder_grads[0] == 0  # step 1: the zero residual blocks the path from the style to the output ...
    assert autoencoder_grads[-1] > 0  # ... once it has moved, gradients reach the autoencoder through SigLIP codes
    collaboration = parts.control_model.middle_block_out.weight
    assert collaboration.grad is not None and collaboration.grad.abs().sum() > 0
    for module, before in zip(parts.frozen, frozen_before, strict=True):
        for key, value in module.state_dict().items():
            assert torch.equal(value, before[key]), key


def test_quantisation_aware_training_passes_gradients_straight_through():
    latent = torch.tensor([[-1.5, -0.2, 0.0, 0.33, 1.2] * 4], requires_grad=True)
    quantized = quantize_straight_through(latent)
    from stylecodes.codec import dequantize, quantize

    expected = dequantize(quantize(latent.detach().numpy()[0]))
    np.testing.assert_allclose(quantized.detach().numpy()[0], expected, atol=1e-6)
    quantized.sum().backward()
    assert torch.equal(latent.grad, torch.ones_like(latent))


@pytest.mark.xfail(
    strict=True,
    reason="open defect: since the demo UNet moved to 8 norm groups the resumed step-3 loss differs from the "
    "uninterrupted one by ~5e-4 relative (steps 1-2 agree to 1e-6); see the issue-10 report",
)
def test_resume_gives_the_same_next_step_as_an_uninterrupted_run(tmp_path, base_folder):
    whole = train(tiny_config(tmp_path / "a", base_folder, max_steps=3), parts=tiny_parts(), show_progress=False)
    first = train(tiny_config(tmp_path / "b", base_folder, max_steps=2), parts=tiny_parts(), show_progress=False)
    assert first.losses == pytest.approx(whole.losses[:2], rel=1e-5)
    parts = tiny_parts()
    init_new_layers(parts.control_model, 1e-4)  # whatever the fresh weights, resume replaces them
    resumed = train(tiny_config(tmp_path / "b", base_folder, max_steps=3), parts=parts, resume=True,
                    show_progress=False)
    assert resumed.step == 3 and len(resumed.losses) == 1
    # Equal up to float summation order (two uninterrupted CPU runs differ at ~1e-6 relative): weights, optimiser
    # state, step, rows and noise all came back. A resume without the optimiser state misses by far more.
    assert resumed.losses[0] == pytest.approx(whole.losses[2], rel=1e-5)


def test_checkpoints_are_complete_and_only_the_newest_are_kept(tmp_path, base_folder):
    config = tiny_config(tmp_path, base_folder, max_steps=3, checkpoint_every=1, keep_checkpoints=2)
    train(config, parts=tiny_parts(), show_progress=False)
    output = tmp_path / "run"
    names = sorted(p.name for p in output.iterdir() if p.name.startswith(("checkpoint-", ".checkpoint-")))
    assert names == ["checkpoint-0000002", "checkpoint-0000003"]  # no leftover temporary folder
    assert json.loads((latest_checkpoint(output) / "training_state.json").read_text())["step"] == 3
    rows = (output / "logs" / "train.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,bad_images,seconds" and len(rows) == 4


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, base_folder, monkeypatch):
    real_loss = train_module.training_loss
    calls = []

    def loss_that_explodes(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_module, "training_loss", loss_that_explodes)
    config = tiny_config(tmp_path, base_folder, max_steps=5, checkpoint_every=2)
    with pytest.raises(TrainingError, match=r"loss became nan at step 3.*checkpoint-0000002.*learning-rate"):
        train(config, parts=tiny_parts(), show_progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-0000002"


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, base_folder):
    config = tiny_config(tmp_path, base_folder, max_steps=50)

    def terminate(step, loss):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(config, parts=tiny_parts(), on_step=terminate, show_progress=False)
    assert result.interrupted and result.step == 1
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-0000001"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_corrupt_and_missing_images_are_counted_and_skipped(tmp_path, base_folder):
    from stylecodes.training.dataset import ProceduralTriples, write_dataset

    folder = tmp_path / "set"
    write_dataset(ProceduralTriples(), folder, 6)
    (folder / "images" / "000001.png").write_bytes(b"not a png")
    (folder / "styles" / "000004.png").unlink()
    config = tiny_config(tmp_path, base_folder, dataset=str(folder), batch_size=3, max_steps=4)
    result = train(config, parts=load_parts(config), show_progress=False)
    assert result.step == 4 and all(np.isfinite(result.losses))
    assert result.bad_images == 4  # both bad rows, in each of the two epochs
