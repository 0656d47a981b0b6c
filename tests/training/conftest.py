"""Training fixtures: the demo's architecture with fresh weights, saved as a base folder the trainer loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylecodes.demo.components import DEMO_AUTOENCODER_CONFIG, build_demo_architecture
from stylecodes.demo.recipe import save_base
from stylecodes.training.config import TrainConfig
from stylecodes.training.parts import TrainingParts, freeze, init_new_layers


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads spin against each other (tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def base_folder(tmp_path_factory) -> Path:
    """An untrained tiny SD1.5-shaped base (`base/`) and SigLIP stand-in (`image_encoder/`) on disk."""
    folder = tmp_path_factory.mktemp("tiny-base")
    save_base(build_demo_architecture(), folder)
    return folder


def tiny_config(tmp_path: Path, base_folder: Path, **changes) -> TrainConfig:
    settings = {
        "base_model": str(base_folder / "base"),
        "image_encoder": str(base_folder / "image_encoder"),
        "dataset": "procedural",
        "output_dir": str(tmp_path / "run"),
        "d_model": DEMO_AUTOENCODER_CONFIG["d_model"],
        "num_heads": DEMO_AUTOENCODER_CONFIG["num_heads"],
        "resolution": 64,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "max_steps": 3,
        "checkpoint_every": 100,
        "validate_every": 100,
        "dataloader_workers": 0,
        "version": 7,
        "title": "Tiny test model",
    }
    settings.update(changes)
    return TrainConfig(**settings)


def tiny_parts() -> TrainingParts:
    demo = build_demo_architecture()
    init_new_layers(demo.control_model, 1e-4)
    parts = TrainingParts(demo.vae, demo.text_encoder, demo.tokenizer, demo.unet, demo.image_encoder,
                          demo.control_model)
    freeze(parts)
    return parts
