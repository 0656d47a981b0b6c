"""Building a model version's parts from its spec: the demo's in-process components, or the published files.

Version 1 resolves every file first (local paths from the environment, else the Hugging Face Hub, see
`stylecodes.hub`), so a missing file fails fast with instructions, before gigabytes are read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from stylecodes import hub
from stylecodes.checkpoint import load_control_weights
from stylecodes.demo import build_demo_components
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.image_encoder import StyleImageEncoder, load_autoencoder, load_vision_model
from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.pipelines.text_to_image import StyleCodesPipeline
from stylecodes.versions import ModelVersionSpec

logger = logging.getLogger(__name__)


def load_style_image_encoder(spec: ModelVersionSpec, *, device: str | torch.device = "cpu") -> StyleImageEncoder:
    """Version `spec`'s image -> code encoder on `device` (in float32): SigLIP plus the checkpoint's autoencoder.

    Never builds or reads the UNet: encoding needs only these two models.
    """
    if spec.is_demo:
        demo = build_demo_components()  # tiny: building the whole demo is cheaper than special-casing it
        encoder = StyleImageEncoder(demo.image_encoder, demo.control_model.autoencoder, version=spec.version)
    else:
        checkpoint_path = hub.resolve_checkpoint(spec)
        vision_model = load_vision_model(hub.resolve_image_encoder(spec))
        autoencoder = load_autoencoder(
            checkpoint_path,
            spec.autoencoder_prefix,
            input_dim=vision_model.config.hidden_size,
            **spec.autoencoder_config,
        )
        encoder = StyleImageEncoder(vision_model, autoencoder, version=spec.version)
    encoder.vision_model.to(device=device)
    encoder.autoencoder.to(device=device)
    return encoder



def build_demo_pipeline() -> StyleCodesPipeline:
    demo = build_demo_components()
    return StyleCodesPipeline(
        vae=demo.vae,
        text_encoder=demo.text_encoder,
        tokenizer=demo.tokenizer,
        unet=demo.unet,
        control_model=demo.control_model,
        scheduler=make_scheduler(),
        image_encoder=demo.image_encoder,
        model_version=0,
    )


def load_published_pipeline(spec: ModelVersionSpec) -> tuple[StyleCodesPipeline, str]:
    """SD1.5 base + control checkpoint + SigLIP for a published version, in fp32 on the CPU."""
    # 1. Resolve all files first: a missing one fails in seconds, with instructions.
    checkpoint_path = hub.resolve_checkpoint(spec)
    base = hub.resolve_base_model(spec)
    siglip_folder = hub.resolve_image_encoder(spec)
    # 2. SD1.5 components (any fine-tune), then the control module built for its UNet, then SigLIP.
    components = _load_base_components(base)
    image_encoder = load_vision_model(siglip_folder)
    control_model = StyleCodesControlModel.from_unet(
        components["unet"], autoencoder_input_dim=image_encoder.config.hidden_size, **spec.autoencoder_config
    )
    load_control_weights(control_model, checkpoint_path)
    control_model.eval().requires_grad_(False)
    pipeline = StyleCodesPipeline(
        **components,
        control_model=control_model,
        scheduler=make_scheduler(),
        image_encoder=image_encoder,
        model_version=spec.version,
    )
    return pipeline, base.label


def _load_base_components(base: hub.BaseModelSource) -> dict[str, Any]:
    """vae, text_encoder, tokenizer, unet (+ safety_checker, feature_extractor when the folder has them)."""
    try:
        if base.is_single_file:
            components = _load_single_file_components(base)
        else:
            components = _load_folder_components(base.path)
    except (OSError, ValueError) as exc:
        raise hub.ModelLoadError(f"Could not load the SD1.5 base model from {base.label}: {exc}") from exc
    for name in ("vae", "text_encoder", "unet", "safety_checker"):
        if components.get(name) is not None:
            components[name].eval().requires_grad_(False)
    return components


def _load_single_file_components(base: hub.BaseModelSource) -> dict[str, Any]:
    """vae, text_encoder, tokenizer, unet of a single-file SD1.5 checkpoint; single files get no safety checker."""
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        # Explicit None for both keeps diffusers from loading them. Its deprecated `load_safety_checker` must not be
        # passed at all: any value but None, even False, makes it download CompVis/stable-diffusion-safety-checker.
        sd = StableDiffusionPipeline.from_single_file(str(base.path), safety_checker=None, feature_extractor=None)
    except SingleFileComponentError as exc:  # a plain Exception subclass; its message is a multi-line code recipe
        detail = (exc.message or str(exc)).strip().splitlines()[0]
        raise hub.ModelLoadError(
            f"Could not load the SD1.5 base model from {base.label}: {detail} The file must be a complete SD1.5 "
            "checkpoint (UNet, VAE and text encoder), or use a diffusers folder of the model instead."
        ) from exc
    return {name: getattr(sd, name) for name in ("vae", "text_encoder", "tokenizer", "unet")}


def _load_folder_components(folder: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:  # transformers >= 5 without torchvision would fall back to this class anyway, with a warning
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    components: dict[str, Any] = {
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
        "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        "safety_checker": None,
        "feature_extractor": None,
    }
    if (folder / "safety_checker" / "config.json").is_file() and (folder / "feature_extractor").is_dir():
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        components["safety_checker"] = StableDiffusionSafetyChecker.from_pretrained(folder, subfolder="safety_checker")
        components["feature_extractor"] = CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor")
    else:
        # Not a warning here: the processes that serve models report it once at startup (bot.worker.__main__).
        logger.info("%s has no safety checker; generated images will not be checked (nsfw=None).", folder)
    return components
