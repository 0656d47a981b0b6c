"""Engine fixtures: the demo engine, and the demo's weights saved as a "published-style" model on disk.

`published_files` writes every file version 1 would read (an SD1.5 diffusers folder with a tiny safety checker, the
control checkpoint as .bin and .safetensors, a SigLIP folder) from the demo components, so the real loading code
(local paths from the environment) runs offline, and its output can be compared with the in-process demo model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylecodes.demo import build_demo_components
from stylecodes.engine import StyleEngine
from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.versions import VERSIONS, ModelVersionSpec


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules that train the demo model: its ops are tiny, so one thread beats two, and does not stall when
    other processes share the cores (two OpenMP threads on a busy 2-core machine ran 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_engine() -> StyleEngine:
    return StyleEngine.load(0)


@pytest.fixture(scope="session")
def style_images() -> list[Image.Image]:
    """Two clearly different pictures (seeded noise and a gradient)."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    ramp = np.linspace(0, 255, 128, dtype=np.uint8)
    gradient = Image.fromarray(
        np.stack([np.tile(ramp, (96, 1)), np.tile(ramp[::-1], (96, 1)), np.full((96, 128), 90, np.uint8)], -1)
    )
    return [noise, gradient]


@dataclass(frozen=True)
class PublishedFiles:
    spec: ModelVersionSpec  # version 1's spec with the demo's autoencoder sizes and its own env prefix
    base_folder: Path
    checkpoint_bin: Path
    checkpoint_safetensors: Path
    siglip_folder: Path

    def env(self, checkpoint: Path | None = None) -> dict[str, str]:
        return {
            self.spec.env_var("BASE_MODEL"): str(self.base_folder),
            self.spec.env_var("CHECKPOINT"): str(checkpoint or self.checkpoint_safetensors),
            self.spec.env_var("IMAGE_ENCODER"): str(self.siglip_folder),
        }


def tiny_safety_checker():
    """A randomly initialised SD safety checker and its feature extractor at 32 px (real classes, toy sizes)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPTextConfig, CLIPVisionConfig

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config=CLIPTextConfig(**small).to_dict(),
        vision_config=CLIPVisionConfig(**small, image_size=32, patch_size=16).to_dict(),
        projection_dim=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        checker = StableDiffusionSafetyChecker(config).eval()
    extractor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, extractor


@pytest.fixture(scope="session")
def published_files(tmp_path_factory) -> PublishedFiles:
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("published")
    demo = build_demo_components()
    checker, extractor = tiny_safety_checker()
    StableDiffusionPipeline(
        vae=demo.vae,
        text_encoder=demo.text_encoder,
        tokenizer=demo.tokenizer,
        unet=demo.unet,
        scheduler=make_scheduler(),
        safety_checker=checker,
        feature_extractor=extractor,
    ).save_pretrained(root / "sd15")
    state_dict = {key: value.contiguous() for key, value in demo.control_model.state_dict().items()}
    save_file(state_dict, str(root / "control.safetensors"))
    torch.save({"controlnet": state_dict}, root / "control.bin")  # the published pickle's layout
    demo.image_encoder.save_pretrained(root / "siglip")
    spec = dataclasses.replace(
        VERSIONS[1], env_prefix="STYLECODES_TEST_V1_", autoencoder_overrides=(("d_model", 32), ("num_heads", 4))
    )
    return PublishedFiles(spec, root / "sd15", root / "control.bin", root / "control.safetensors", root / "siglip")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """The Hugging Face Hub in offline mode with an empty cache: any download attempt fails at once."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    for name in ("BASE_MODEL", "CHECKPOINT", "IMAGE_ENCODER", "CHECKPOINT_FILE", "REVISION"):
        monkeypatch.delenv(f"STYLECODES_V1_{name}", raising=False)
