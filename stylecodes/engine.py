"""`StyleEngine`: what the bot's worker and the CLI call. One loaded model version; encode images, paint batches.

    engine = StyleEngine.load(1, device="cuda", dtype=torch.float16)   # version 0: the offline demo model
    codes = engine.encode([load_image("painting.jpg")])
    [result] = engine.generate([GenerationRequest("a lighthouse at dusk", seed=7, styles=(CodeStyle(codes[0]),))])
    result.image.save("out.png")

Loading version 1 resolves every file first (local paths from the environment, else the Hugging Face Hub, see
`stylecodes.hub`), so a missing file fails fast with instructions, before gigabytes are read. `engine.fingerprint`
says what exactly was loaded (sha256, source and Hub revision of the control weights); every result carries it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch

from stylecodes.codec import StyleCode
from stylecodes.hub import ModelFingerprint
from stylecodes.loaders import load_model
from stylecodes.pipelines.text_to_image import StepCallback, StyleCodesPipeline
from stylecodes.requests import GenerationRequest
from stylecodes.versions import DEMO_NOTICE, ModelVersionSpec, UnservedVersionError, get_spec

logger = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "GenerationResult", "StepCallback", "StyleEngine"]


@dataclass
class GenerationResult:
    image: PIL.Image.Image
    request: GenerationRequest
    nsfw: bool | None  # None when the model has no safety checker
    warnings: list[str] = field(default_factory=list)  # e.g. the prompt was truncated to 77 tokens
    metadata: dict[str, Any] = field(default_factory=dict)  # everything needed to paint it again


class StyleEngine:
    """A loaded model version. Not thread-safe: one `generate`/`encode` at a time (the worker is single-threaded)."""

    def __init__(
        self, pipeline: StyleCodesPipeline, spec: ModelVersionSpec, *, base_model: str, fingerprint: ModelFingerprint
    ) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.base_model = base_model
        self.fingerprint = fingerprint  # what exactly the control weights are: sha256, source, Hub revision

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
        """Load model `version` (0: the demo, shipped in the package; 1: the published release, downloaded on first
        use; others: model-version folders from `STYLECODES_MODEL_PATHS`).

        Raises `UnservedVersionError` for versions that do not exist and `hub.ModelLoadError` (or
        `checkpoint.CheckpointError`) with instructions when files are missing or unreadable.
        """
        spec = get_spec(version)
        pipeline, base_model, fingerprint = load_model(spec)  # on the CPU, every file checked
        pipeline.to(torch.device(device))
        if dtype != pipeline.unet.dtype:  # (diffusers logs a spurious float32 warning on every dtype cast)
            pipeline.to(dtype=dtype)
        pipeline.set_progress_bar_config(disable=not show_progress, desc="Denoising", leave=False)
        return cls(pipeline, spec, base_model=base_model, fingerprint=fingerprint)

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
            raise ValueError(
                f"`requests` must share one batch_key() (steps, guidance, width, height, adapters), got {keys}."
            )
        for request in requests:
            code = request.code_style
            if code is not None and code.code.version != self.version:
                raise UnservedVersionError(code.code.version, [self.version])
        first = requests[0]
        output = self.pipeline(
            prompt=[request.prompt for request in requests],
            style=[request.styles for request in requests],  # a tuple per request: its styles, combined
            negative_prompt=[request.negative_prompt for request in requests],
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
            metadata = {
                **metadata,
                "model_title": self.spec.title,
                "base_model": self.base_model,
                "model_fingerprint": self.fingerprint.as_metadata(),
            }
            if self.spec.is_demo:
                warnings = [*warnings, f"Made with {DEMO_NOTICE}."]
            results.append(GenerationResult(image, request, nsfw, warnings, metadata))
        return results
