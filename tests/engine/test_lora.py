"""Forged adapters in use: through the store into the engine's UNet, diffusers' loader, the cache, bad files."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from registry.artifacts import LocalArtifactStore, content_key
from stylecodes.engine import GenerationRequest, StyleEngine
from stylecodes.lora.adapter import LoraAdapter, canonical_safetensors
from stylecodes.lora.manifest import AdapterFileError, read_manifest
from stylecodes.lora.runtime import LoraAdapterCache, with_trigger_words
from stylecodes.training.forge.base import ForgeBase
from stylecodes.training.forge.config import ForgeConfig
from stylecodes.training.forge.train import forge
from tests.engine.test_forge import image_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = ForgeConfig(steps=2, checkpoint_every=10, prior_images=1, prior_steps=1, preview_steps=1, learning_rate=1e-2)


@pytest.fixture(scope="module")
def adapters(one_torch_thread) -> list[LoraAdapter]:
    """Two forged adapters (different image sets), trained for two steps each."""
    return [forge(ForgeBase.load(0), image_set(seed), QUICK).adapter for seed in (1, 2)]


@pytest.fixture(scope="module")
def engine(one_torch_thread) -> StyleEngine:
    return StyleEngine.load(0)


def paint(engine: StyleEngine, prompt: str = "a cat") -> np.ndarray:
    request = GenerationRequest(prompt, seed=3, steps=3, width=64, height=64)
    return np.asarray(engine.generate([request])[0].image, dtype=np.int16)


def test_adapter_through_the_store_changes_the_output_and_unloads_cleanly(engine, adapters, tmp_path):
    data = adapters[0].to_bytes()
    assert len(data) < 300_000 and data == adapters[0].to_bytes()  # a canonical file: one sha256 per content
    store = LocalArtifactStore(tmp_path / "artifacts")
    ref = asyncio.run(store.put(content_key("loras", data, ".safetensors"), data))
    assert ref.sha256 == adapters[0].sha256
    adapter = LoraAdapter.from_bytes(asyncio.run(store.get(ref.uri, sha256=ref.sha256)))
    assert adapter.sha256 == ref.sha256 and adapter.trigger_words == ("sks style",)

    plain = paint(engine)
    cache = LoraAdapterCache(engine.pipeline.unet)
    with cache.active([(adapter, 1.0)]):
        styled = paint(engine)
    # The adapter changes the picture (the demo's random VAE compresses every change into a narrow band of colours,
    # so 0.2 levels on average is a clear change: the same path without the adapter differs by exactly 0).
    assert np.abs(styled - plain).mean() > 0.2
    assert np.array_equal(paint(engine), plain)  # and with none active the base paints exactly as before
    with cache.active([(adapter, 0.0)]):
        assert np.array_equal(paint(engine), plain)  # LoRA scale 0 is the base
    with cache.active([(adapter, 0.5)]):
        half = paint(engine)
    assert 0 < np.abs(half - plain).mean() < np.abs(styled - plain).mean()
    for name in cache.loaded:
        cache.evict(name)


def test_cache_keeps_recent_adapters_and_combines_them(engine, adapters):
    cache = LoraAdapterCache(engine.pipeline.unet, capacity=1)
    first, second = adapters
    cache.activate([(first, 1.0)])
    alone = paint(engine)
    cache.activate([(second, 1.0)])  # evicts the first (capacity 1)
    assert len(cache.loaded) == 1 and cache.loaded[0].endswith(second.sha256[:16])
    cache.capacity = 2
    cache.activate([(first, 1.0), (second, 1.0)])  # an adapter set: both at once
    both = paint(engine)
    assert sorted(cache.loaded) == sorted(f"lora_{a.sha256[:16]}" for a in adapters)
    cache.activate([(first, 1.0)])  # switching back within the cache: no reload, same picture as before
    assert np.array_equal(paint(engine), alone)
    assert not np.array_equal(both, alone)
    cache.deactivate()
    for name in cache.loaded:
        cache.evict(name)
    with pytest.raises(ValueError, match=r"LoRA scale must be in 0\.0\.\.2\.0"):
        cache.activate([(first, 3.0)])


def test_the_file_loads_with_diffusers_load_lora_weights(adapters, tmp_path):
    from diffusers import StableDiffusionPipeline

    from stylecodes.pipelines.scheduler import make_scheduler

    path = tmp_path / "style.safetensors"
    manifest_path = adapters[0].save(path)
    assert manifest_path.name == "style.safetensors.json" and adapters[0].sha256 in manifest_path.read_text()
    base = ForgeBase.load(0)
    pipe = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=make_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = base.encode_prompts(["sks style"])
    with torch.no_grad():
        plain = base.unet(sample, 500, encoder_hidden_states=text).sample
        pipe.load_lora_weights(str(path), adapter_name="style")
        theirs = base.unet(sample, 500, encoder_hidden_states=text).sample
        pipe.unload_lora_weights()
        cache = LoraAdapterCache(base.unet)
        cache.activate([(LoraAdapter.read(path), 1.0)])
        ours = base.unet(sample, 500, encoder_hidden_states=text).sample
    assert not torch.allclose(theirs, plain)
    torch.testing.assert_close(ours, theirs)  # same layout, same LoRA config (rank, alpha): same output


def test_bad_adapter_files_are_clear_errors(engine, adapters):
    with pytest.raises(AdapterFileError, match="not a safetensors file"):
        LoraAdapter.from_bytes(b"hello")
    not_lora = canonical_safetensors({"model.weight": torch.zeros(2, 2)}, {})
    with pytest.raises(AdapterFileError, match=r"not a Stable Diffusion 1\.5 LoRA in diffusers' layout"):
        read_manifest(not_lora)
    # A LoRA whose shapes belong to another base: refused, and nothing stays half-loaded in the UNet.
    wrong = {key: torch.zeros(value.shape[0], value.shape[1] + 3, dtype=value.dtype) if ".lora.down." in key else value
             for key, value in adapters[0].state_dict.items()}  # fmt: skip
    mismatched = LoraAdapter.build(wrong, adapters[0].lora_config, adapters[0].manifest)
    cache = LoraAdapterCache(engine.pipeline.unet)
    with pytest.raises(AdapterFileError, match="does not fit this model's UNet"):
        cache.activate([(mismatched, 1.0)])
    assert cache.loaded == [] and not getattr(engine.pipeline.unet, "peft_config", {})


def test_trigger_words_are_added_once():
    class Forged:
        trigger_words = ("sks style",)

    assert with_trigger_words("a cat", [Forged()]) == "a cat, sks style"
    assert with_trigger_words("a cat in SKS style", [Forged()]) == "a cat in SKS style"
    assert with_trigger_words("a cat, ", [Forged(), Forged()]) == "a cat, sks style"
