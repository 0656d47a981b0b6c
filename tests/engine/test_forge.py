"""StyleForge training on the demo model (64 px, a few steps): what trains, exact resume, cancel, progress, priors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylecodes.lora.manifest import read_manifest
from stylecodes.training.forge.base import ForgeBase
from stylecodes.training.forge.checkpoint import CheckpointMismatchError, ForgeCheckpoint
from stylecodes.training.forge.config import ForgeConfig
from stylecodes.training.forge.imageset import ForgeImage, ImageSet, pixel_sha256
from stylecodes.training.forge.train import ForgeCancelled, forge

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Few, cheap steps: 4 training steps, a checkpoint after 2, 2 generated prior images, 1-step previews.
TINY = ForgeConfig(steps=4, checkpoint_every=2, prior_images=2, prior_steps=2, preview_steps=1, learning_rate=1e-3)


def image_set(seed: int, count: int = 5) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        image = Image.fromarray(rng.integers(0, 256, (72, 64, 3), dtype=np.uint8))
        images.append(ForgeImage(f"{index}.png", image, pixel_sha256(image)))
    return ImageSet(images)


@pytest.fixture(scope="module")
def run(one_torch_thread):
    """One tiny forge run, with everything it reported: the base before/after, progress and checkpoints."""
    base = ForgeBase.load(0)
    before = {name: value.clone() for name, value in base.unet.state_dict().items()}
    progress, checkpoints = [], []
    result = forge(base, image_set(1), TINY, on_progress=progress.append, on_checkpoint=checkpoints.append)
    return base, before, result, progress, checkpoints


def test_only_lora_parameters_train_and_the_base_is_left_untouched(run):
    base, before, result, _, checkpoints = run
    after = base.unet.state_dict()
    assert set(after) == set(before)  # no LoRA layer left behind in the base
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not any(parameter.requires_grad for parameter in base.unet.parameters())
    # What the optimiser held is exactly the LoRA matrices of the attention projections, and they moved.
    trained = checkpoints[0].lora
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trained} == {"to_q", "to_k", "to_v", "0"}
    assert len(checkpoints[0].optimizer) == len(trained)
    # peft starts every B matrix at zero; training moved all of them except self-attention's query and key in the
    # mid block, which sees a 1x1 latent at 64 px: softmax over one token has no gradient for them.
    ups = {name: value for name, value in result.adapter.state_dict.items() if ".lora.up." in name}
    still_zero = {name for name, value in ups.items() if not value.abs().sum() > 0}
    assert len(ups) == len(trained) // 2
    assert still_zero == {f"unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_{p}.lora.up.weight" for p in "qk"}


def test_result_reports_generated_priors_and_a_manifest(run):
    _, _, result, _, _ = run
    assert result.prior_source == "generated"
    manifest = read_manifest(result.adapter.to_bytes())
    assert manifest is not None
    assert manifest.trigger_words == ("sks style",) and manifest.prior_source == "generated"
    assert (manifest.rank, manifest.steps, manifest.resolution, manifest.model_version) == (8, 4, 64, 0)
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    assert len(result.previews) == 4 and result.preview_grid.size == (128, 128)


def test_progress_counts_steps_with_an_eta_and_previews_at_checkpoints(run):
    _, _, _, progress, checkpoints = run
    assert [p.step for p in progress if p.phase == "priors"] == [2]
    training = [p for p in progress if p.phase == "training"]
    assert [p.step for p in training] == [1, 2, 3, 4] and all(p.total == 4 for p in training)
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in training) and training[-1].loss is not None
    previews = [p for p in progress if p.phase == "previews"]
    assert [p.step for p in previews] == [2] and len(previews[0].previews) == 4
    assert [c.step for c in checkpoints] == [2]  # not after the last step: the result replaces it


def test_resume_on_a_fresh_base_ends_with_the_same_weights(run):
    _, _, result, _, checkpoints = run
    checkpoint = ForgeCheckpoint.from_bytes(checkpoints[0].to_bytes())  # as read back from shared storage
    assert checkpoint.prior_images is not None and checkpoint.prior_images.shape == (2, 64, 64, 3)
    resumed = forge(ForgeBase.load(0), image_set(1), TINY, resume=checkpoint)
    assert resumed.resumed_from == 2 and resumed.losses == result.losses
    assert resumed.adapter.sha256 == result.adapter.sha256


def test_a_checkpoint_of_another_run_is_refused(run):
    _, _, _, _, checkpoints = run
    with pytest.raises(CheckpointMismatchError, match="belongs to another forge run"):
        forge(ForgeBase.load(0), image_set(2), TINY, resume=checkpoints[0])
    with pytest.raises(CheckpointMismatchError, match="damaged"):
        ForgeCheckpoint.from_bytes(b"not a checkpoint at all")


def test_cancel_stops_and_leaves_the_base_as_it_was():
    base = ForgeBase.load(0)
    names = set(base.unet.state_dict())
    steps = []
    with pytest.raises(ForgeCancelled, match="Cancelled at step 2 of 4"):
        forge(base, image_set(1), TINY, on_progress=lambda p: steps.append(p.step), should_stop=lambda: len(steps) >= 3)
    assert set(base.unet.state_dict()) == names


def test_an_auxiliary_folder_replaces_generated_priors():
    progress = []
    config = ForgeConfig(steps=1, checkpoint_every=10, preview_steps=1, preview_prompts=("a cat",))
    result = forge(
        ForgeBase.load(0), image_set(1), config, auxiliary=image_set(9, count=3), on_progress=progress.append
    )
    assert result.prior_source == "auxiliary"
    assert read_manifest(result.adapter.to_bytes()).prior_source == "auxiliary"
    assert not [p for p in progress if p.phase == "priors"]  # nothing was generated


def test_settings_are_checked():
    with pytest.raises(ValueError, match="`trigger` must be one word"):
        ForgeConfig(trigger="two words")
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        ForgeConfig(steps=0)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        ForgeBase.load(0, dtype=torch.float16)
