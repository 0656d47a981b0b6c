"""`StyleEngine`: what the bot's worker and the CLI call. One loaded model version; encode images, paint batches.

    engine = StyleEngine.load(1, device="cuda", dtype=torch.float16)   # version 0: the offline demo model
    codes = engine.encode([load_image("painting.jpg")])
    [result] = engine.generate([GenerationRequest("a lighthouse at dusk", seed=7, style=codes[0])])
    result.image.save("out.png")

Loading version 1 resolves every file first (local paths from the environment, else the Hugging Face Hub, see
`stylecodes.hub`), so a missing file fails fast with instructions, before gigabytes are read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from stylecodes import hub
from stylecodes.checkpoint import load_control_weights
from stylecodes.codec import StyleCode
from stylecodes.control import StyleCodesControlModel
from stylecodes.image_encoder import load_vision_model
from stylecodes.pipeline import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    GUIDANCE_RANGE,
    MAX_SEED,
    MAX_STEPS,
    STRENGTH_RANGE,
    StepCallback,
    StyleCodesPipeline,
    check_int,
    check_number,
    check_size,
    make_scheduler,
)
from stylecodes.versions import DEMO_NOTICE, ModelVersionSpec, UnservedVersionError, get_spec

logger = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "GenerationResult", "StepCallback", "StyleEngine"]


@dataclass(frozen=True)
class GenerationRequest:
    """One image to paint. Checked when created: a bad field raises ValueError naming it, before any queueing."""

    prompt: str
    seed: int
    negative_prompt: str = ""
    style: StyleCode | None = None  # None: plain SD1.5, no style
    strength: float = DEFAULT_STRENGTH  # 0..1.5
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    width: int = 512
    height: int = 512

    def __post_init__(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"`{name}` must be a string, got {type(getattr(self, name)).__name__}.")
        if self.style is not None and not isinstance(self.style, StyleCode):
            raise ValueError(
                f"`style` must be a StyleCode or None (parse text with stylecodes.codec.parse_code), "
                f"got {type(self.style).__name__}."
            )
        checked = {
            "seed": check_int("seed", self.seed, 0, MAX_SEED),
            "strength": check_number("strength", self.strength, *STRENGTH_RANGE),
            "steps": check_int("steps", self.steps, 1, MAX_STEPS),
            "guidance_scale": check_number("guidance_scale", self.guidance_scale, *GUIDANCE_RANGE),
            "width": check_size("width", self.width),
            "height": check_size("height", self.height),
        }
        for name, value in checked.items():  # numpy scalars become Python numbers, so requests serialise as JSON
            object.__setattr__(self, name, value)

    def batch_key(self) -> tuple[int, float, int, int]:
        """Requests with equal keys can be painted in one batch."""
        return (self.steps, self.guidance_scale, self.width, self.height)


@dataclass
class GenerationResult:
    image: PIL.Image.Image
    request: GenerationRequest
    nsfw: bool | None  # None when the model has no safety checker
    warnings: list[str] = field(default_factory=list)  # e.g. the prompt was truncated to 77 tokens
    metadata: dict[str, Any] = field(default_factory=dict)  # everything needed to paint it again


class StyleEngine:
    """A loaded model version. Not thread-safe: one `generate`/`encode` at a time (the worker is single-threaded)."""

    def __init__(self, pipeline: StyleCodesPipeline, spec: ModelVersionSpec, *, base_model: str) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.base_model = base_model

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def has_safety_checker(self) -> bool:
        return self.pipeline.safety_checker is not None

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.unet.dtype

    @classmethod
    def load(
        cls,
        version: int,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        show_progress: bool = False,
    ) -> StyleEngine:
        """Load model `version` (0: demo, built in-process; 1: the published release, downloaded on first use).

        Raises `UnservedVersionError` for versions that do not exist and `hub.ModelLoadError` (or
        `checkpoint.CheckpointError`) with instructions when files are missing or unreadable.
        """
        spec = get_spec(version)
        if spec.is_demo:
            pipeline, base_model = _build_demo_pipeline(), "demo (built in-process)"
        else:
            pipeline, base_model = _load_published_pipeline(spec)
        pipeline.to(torch.device(device))
        if dtype != pipeline.unet.dtype:  # (diffusers logs a spurious float32 warning on every dtype cast)
            pipeline.to(dtype=dtype)
        pipeline.set_progress_bar_config(disable=not show_progress, desc="Denoising", leave=False)
        return cls(pipeline, spec, base_model=base_model)

    def encode(self, images: Sequence[PIL.Image.Image]) -> list[StyleCode]:
        """Stylecodes of this version for PIL `images` (files: `stylecodes.images.load_image`), batched, in float32."""
        return self.pipeline.style_image_encoder().encode(images)

    def generate(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[GenerationResult]:
        """Paint one image per request, in one batch. All requests must share `batch_key()` and this version."""
        requests = list(requests)
        if not requests:
            raise ValueError("`requests` is empty; pass at least one GenerationRequest.")
        keys = {request.batch_key() for request in requests}
        if len(keys) > 1:
            raise ValueError(f"`requests` must share one batch_key() (steps, guidance, width, height), got {keys}.")
        for request in requests:
            if request.style is not None and request.style.version != self.version:
                raise UnservedVersionError(request.style.version, [self.version])
        first = requests[0]
        output = self.pipeline(
            prompt=[request.prompt for request in requests],
            style=[request.style for request in requests],
            negative_prompt=[request.negative_prompt for request in requests],
            strength=[request.strength for request in requests],
            seed=[request.seed for request in requests],
            guidance_scale=first.guidance_scale,
            num_inference_steps=first.steps,
            width=first.width,
            height=first.height,
            callback=on_step,
        )
        results = []
        for request, image, nsfw, warnings, metadata in zip(
            requests, output.images, output.nsfw_content_detected, output.warnings, output.metadata, strict=True
        ):
            metadata = {**metadata, "model_title": self.spec.title, "base_model": self.base_model}
            if self.spec.is_demo:
                warnings = [*warnings, f"Made with the {DEMO_NOTICE}."]
            results.append(GenerationResult(image, request, nsfw, warnings, metadata))
        return results


# --------------------------------------------------------------------------------------------------------- loading


def _build_demo_pipeline() -> StyleCodesPipeline:
    from stylecodes.demo import build_demo_components

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


def _load_published_pipeline(spec: ModelVersionSpec) -> tuple[StyleCodesPipeline, str]:
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
