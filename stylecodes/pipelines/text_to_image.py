"""`StyleCodesPipeline`: text-to-image with Stable Diffusion 1.5 steered by a stylecode (diffusers style).

One call paints a batch in which every sample has its own prompt, negative prompt, seed, style (a code, a raw
latent, a style image, or none) and strength. The published settings are the defaults: DDIM (scaled-linear betas
0.00085..0.012, steps_offset 1, clip_sample off), 20 steps, guidance 3, strength 0.9, style applied to both halves
of the classifier-free-guidance batch.

Reproducibility: each sample's starting noise comes from its own CPU `torch.Generator` seeded with that sample's
seed, and DDIM (eta 0) adds no further noise, so a sample's image depends on its own inputs, never on what else is
in the batch. `output.metadata[i]` records everything needed to paint image i again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer, SiglipVisionModel

from stylecodes.codec import LATENT_DIM, StyleCode, parse_code
from stylecodes.models.control import PreparedStyle, StyleCodesControlModel
from stylecodes.models.image_encoder import StyleImageEncoder
from stylecodes.models.precision import keep_float32
from stylecodes.pipelines.previews import latent_previews
from stylecodes.requests import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    GUIDANCE_RANGE,
    MAX_IMAGES_PER_CALL,
    MAX_SEED,
    MAX_STEPS,
    STRENGTH_RANGE,
    check_int,
    check_number,
    check_size,
    describe,
)
from stylecodes.versions import UnservedVersionError

logger = logging.getLogger(__name__)

# What one sample's style may be: a code (object or text), a raw 20-dim latent, a style image, or None (no style).
StyleInput = Union[StyleCode, str, np.ndarray, Tensor, PIL.Image.Image, None]  # noqa: UP007 (runtime alias)
# on_step(step, total_steps, make_previews): make_previews() builds low-res RGB previews only when called.
StepCallback = Callable[[int, int, Callable[[], list[PIL.Image.Image]]], None]

@dataclass
class StyleCodesPipelineOutput(BaseOutput):
    """Per image: the picture, the safety verdict (None without a checker), warnings and reproduction metadata."""

    images: list[PIL.Image.Image]
    nsfw_content_detected: list[bool | None]
    warnings: list[list[str]]
    metadata: list[dict[str, Any]]


@dataclass
class _Sample:
    prompt: str
    negative_prompt: str
    seed: int
    strength: float
    style: StyleInput
    latent: Tensor | None = None  # (20,) resolved style latent
    code: StyleCode | None = None
    style_source: str = "none"
    warnings: list[str] = field(default_factory=list)


class StyleCodesPipeline(DiffusionPipeline):
    """SD1.5 (tokenizer, text encoder, VAE, UNet, DDIM) plus the StyleCodes control module and image encoder.

    `image_encoder` (SigLIP) is needed only for style images; `safety_checker` + `feature_extractor` are optional.
    Move it with `.to(device, dtype)`; every tensor of a call is created on that device and dtype, except that the
    style image encoder (SigLIP and the control module's autoencoder) always stays float32, so that an image's code
    does not depend on the pipeline's dtype.
    """

    model_cpu_offload_seq = "text_encoder->unet->control_model->vae"
    _optional_components: ClassVar[list[str]] = ["image_encoder", "safety_checker", "feature_extractor"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        control_model: StyleCodesControlModel,
        scheduler: DDIMScheduler,
        image_encoder: SiglipVisionModel | None = None,
        safety_checker: Any = None,
        feature_extractor: Any = None,
        model_version: int = 1,
    ) -> None:
        super().__init__()
        if safety_checker is not None and feature_extractor is None:
            raise ValueError("`safety_checker` needs its `feature_extractor`; pass both or neither.")
        if image_encoder is not None:  # (the control module pins its own autoencoder)
            keep_float32(image_encoder)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            control_model=control_model,
            scheduler=scheduler,
            image_encoder=image_encoder,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
        )
        self.register_to_config(model_version=model_version)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def model_version(self) -> int:
        return self.config.model_version

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        style: StyleInput | list[StyleInput] = None,
        negative_prompt: str | list[str] | None = None,
        strength: float | list[float] = DEFAULT_STRENGTH,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        num_inference_steps: int = DEFAULT_STEPS,
        seed: int | list[int] | None = None,
        width: int = 512,
        height: int = 512,
        num_images_per_prompt: int = 1,
        callback: StepCallback | None = None,
    ) -> StyleCodesPipelineOutput:
        """Paint `len(prompt) * num_images_per_prompt` images.

        `style`, `negative_prompt`, `strength` and `seed` take one value for all samples, one per prompt, or one per
        sample (prompt-major: all images of prompt 0 first). A style is a `StyleCode` or its text, a (20,) latent
        (numpy or torch), a PIL style image, or None for plain SD1.5. An int `seed` gives sample i the seed
        `seed + i`; None draws random seeds (recorded in the metadata). `callback(step, total, make_previews)` runs
        after every denoising step; `make_previews()` returns (height/8)x(width/8) RGB previews of the predicted
        final images, cheaply (no VAE), and must be called inside the callback.
        """
        # 1. Check every argument before any work, and expand the per-prompt ones to one value per sample. From here
        # on only the checked values are used: plain Python numbers (numpy scalars would break json.dumps(metadata)).
        call = check_call_arguments(
            prompt=prompt,
            style=style,
            negative_prompt=negative_prompt,
            strength=strength,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            seed=seed,
            width=width,
            height=height,
            num_images_per_prompt=num_images_per_prompt,
        )
        samples, guidance_scale, width, height = call.samples, call.guidance_scale, call.width, call.height
        device, dtype = self._execution_device, self.unet.dtype
        do_cfg = guidance_scale > 1.0

        # 2. Resolve styles to latents (style images go through SigLIP and the 6-bit code, as published).
        self._resolve_styles(samples)

        # 3. Text embeddings; prompts beyond the text encoder's window are truncated with a warning.
        text_embeddings = self._encode_prompts(samples, do_cfg, device)  # (2N or N, 77, D)

        # 4. Timesteps.
        self.scheduler.set_timesteps(call.num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 5. Starting noise, one generator per sample so each image depends only on its own seed.
        latent_shape = (self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        noise = [torch.randn(latent_shape, generator=torch.Generator().manual_seed(s.seed)) for s in samples]
        latents = torch.stack(noise).to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma  # (N, 4, h, w)

        # 6. Style maps, once per generation; samples without a style get scale 0 (exactly the plain UNet).
        style = self._prepare_styles(samples, latent_shape[1:], device, do_cfg)

        # 7. Denoising loop.
        with self.progress_bar(total=len(timesteps)) as progress:
            for index, timestep in enumerate(timesteps):
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, timestep)
                eps = self._predict_noise(model_input, timestep, text_embeddings, style)
                if do_cfg:
                    eps_uncond, eps_text = eps.chunk(2)
                    eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
                step = self.scheduler.step(eps, timestep, latents)
                latents = step.prev_sample
                progress.update()
                if callback is not None:
                    predicted = step.pred_original_sample
                    callback(index + 1, len(timesteps), lambda predicted=predicted: latent_previews(predicted))

        # 8. Decode, safety check, metadata.
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample  # (N, 3, H, W)
        images = self.image_processor.postprocess(decoded.float(), output_type="pil")
        nsfw = self._check_safety(images, device)
        settings = {
            "steps": call.num_inference_steps,
            "guidance_scale": guidance_scale,
            "width": width,
            "height": height,
        }
        return StyleCodesPipelineOutput(
            images=images,
            nsfw_content_detected=nsfw,
            warnings=[sample.warnings for sample in samples],
            metadata=[self._metadata(sample, settings) for sample in samples],
        )

    # ---------------------------------------------------------------------------------------------------- styles

    def _resolve_styles(self, samples: list[_Sample]) -> None:
        images: list[tuple[_Sample, PIL.Image.Image]] = []
        for sample in samples:
            style = sample.style
            if style is None:
                continue
            if isinstance(style, str):
                style = parse_code(style)  # CodeError says exactly what is wrong with the text
            if isinstance(style, StyleCode):
                if style.version != self.model_version:
                    raise UnservedVersionError(style.version, [self.model_version])
                sample.code, sample.style_source = style, "code"
                sample.latent = torch.from_numpy(style.latent())
            elif isinstance(style, PIL.Image.Image):
                images.append((sample, style))
            elif isinstance(style, np.ndarray | Tensor):
                latent = torch.as_tensor(style, dtype=torch.float32).detach().cpu()
                if tuple(latent.shape) != (LATENT_DIM,) or not bool(torch.isfinite(latent).all()):
                    raise ValueError(
                        f"A `style` latent must be {LATENT_DIM} finite values, got shape {tuple(latent.shape)}."
                    )
                sample.latent, sample.style_source = latent, "latent"
            else:
                raise ValueError(
                    "Each `style` must be a StyleCode, a code string, a 20-value latent, a PIL image or None, "
                    f"got {type(style).__name__}."
                )
        if images:
            codes = self.style_image_encoder().encode([image for _, image in images])  # through the 6-bit code
            for (sample, _), code in zip(images, codes, strict=True):
                sample.code, sample.style_source = code, "image"
                sample.latent = torch.from_numpy(code.latent())

    def style_image_encoder(self) -> StyleImageEncoder:
        """SigLIP + the control module's autoencoder: images -> codes of this pipeline's version."""
        if self.image_encoder is None:
            raise ValueError("`style` images need the SigLIP `image_encoder`; this pipeline was built without one.")
        return StyleImageEncoder(self.image_encoder, self.control_model.autoencoder, version=self.model_version)

    def _prepare_styles(
        self, samples: list[_Sample], sample_size: tuple[int, int], device: torch.device, cfg: bool
    ) -> PreparedStyle | None:
        """The UNet batch's style maps and scales, ready for every step, or None when no sample has a style."""
        if all(sample.latent is None or sample.strength == 0 for sample in samples):
            return None
        zeros = torch.zeros(LATENT_DIM)  # placeholder for unstyled samples; scale 0 makes its map irrelevant
        # (N, 20) float32: decode_style decodes in float32 and returns the map in the control stream's dtype
        latents = torch.stack([zeros if s.latent is None else s.latent for s in samples]).to(device)
        scales = [0.0 if s.latent is None else s.strength for s in samples]
        style_map = self.control_model.decode_style(latents, *sample_size)  # (N, C_mid, h/8, w/8)
        scale = torch.tensor(scales, dtype=torch.float64)  # (N,) on the CPU: prepare_style reads it without a sync
        if cfg:  # the published pipeline styles both halves of the guidance batch
            style_map, scale = torch.cat([style_map] * 2), torch.cat([scale] * 2)
        return self.control_model.prepare_style(style_map, scale)  # which rows are styled, worked out once

    def _predict_noise(self, sample: Tensor, timestep: Tensor, text: Tensor, style: PreparedStyle | None) -> Tensor:
        if style is None:
            return self.unet(sample, timestep, encoder_hidden_states=text).sample
        return self.control_model(self.unet, sample, timestep, text, style)

    # ------------------------------------------------------------------------------------------------------ text

    def _encode_prompts(self, samples: list[_Sample], cfg: bool, device: torch.device) -> Tensor:
        for sample in samples:
            for label, text in (("prompt", sample.prompt), ("negative prompt", sample.negative_prompt)):
                dropped = self._truncated_part(text)
                if dropped:
                    sample.warnings.append(
                        f"The {label} is longer than the text encoder's {self.tokenizer.model_max_length} tokens; "
                        f"this end of it was ignored: “{dropped}”."
                    )
        texts = [s.prompt for s in samples]
        if cfg:
            texts = [s.negative_prompt for s in samples] + texts
        unique = list(dict.fromkeys(texts))  # encode each distinct text once
        tokens = self.tokenizer(
            unique,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)  # (U, 77)
        embeddings = self.text_encoder(tokens)[0].to(self.unet.dtype)  # (U, 77, D)
        index = torch.tensor([unique.index(text) for text in texts], device=device)
        return embeddings.index_select(0, index)  # (2N or N, 77, D): negatives first, as the CFG split expects

    def _truncated_part(self, text: str) -> str:
        """The end of `text` that the text encoder never sees, as the user wrote it ("" when all of it fits)."""
        limit = self.tokenizer.model_max_length
        # Not truncated: CLIP's BPE works on UTF-8 bytes, so one character can be several tokens (CJK, emoji) and
        # no character-count bound is safe. verbose=False: an over-long text is expected here, not worth a log line.
        fast = self.tokenizer.is_fast  # only fast tokenizers map tokens back to character offsets
        encoding = self.tokenizer(text, truncation=False, verbose=False, return_offsets_mapping=fast)
        if len(encoding.input_ids) <= limit:
            return ""
        first_dropped = limit - 1  # truncation keeps the start token, the first limit - 2 text tokens, the end token
        if fast:  # quote the original characters (decoding would lowercase them and drop unknown tokens)
            return text[encoding.offset_mapping[first_dropped][0] :].strip()
        return self.tokenizer.decode(encoding.input_ids[first_dropped:-1], skip_special_tokens=True).strip()

    # -------------------------------------------------------------------------------------------------- outputs

    def _check_safety(self, images: list[PIL.Image.Image], device: torch.device) -> list[bool | None]:
        if self.safety_checker is None:
            return [None] * len(images)
        features = self.feature_extractor(images, return_tensors="pt").pixel_values  # (N, 3, 224, 224)
        features = features.to(device, self.safety_checker.dtype)
        arrays = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        # The checker blacks out flagged images in the array it is given; only its verdict is used here, so the
        # caller decides what to show (e.g. a spoiler in NSFW channels).
        _, flags = self.safety_checker(clip_input=features, images=arrays.copy())
        return [bool(flag) for flag in flags]

    def _metadata(self, sample: _Sample, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "prompt": sample.prompt,
            "negative_prompt": sample.negative_prompt,
            "style_code": None if sample.code is None else sample.code.canonical,
            "style_latent": sample.latent.tolist() if sample.style_source == "latent" else None,
            "style_source": sample.style_source,
            "strength": sample.strength,
            "seed": sample.seed,
            "scheduler": "DDIM",
            **settings,
        }


@dataclass(frozen=True)
class CheckedCall:
    """`check_call_arguments`' result: one record per sample and the batch-wide settings, as plain Python values."""

    samples: list[_Sample]
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int


def check_call_arguments(
    *,
    prompt: Any,
    style: Any,
    negative_prompt: Any,
    strength: Any,
    guidance_scale: Any,
    num_inference_steps: Any,
    seed: Any,
    width: Any,
    height: Any,
    num_images_per_prompt: Any,
) -> CheckedCall:
    """Validate `StyleCodesPipeline.__call__`'s arguments (errors name the argument) without any model.

    Numpy scalars are accepted and returned as Python numbers. Callers may run it before loading a model to fail fast.
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list | tuple) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("`prompt` must be a string or a non-empty list of strings.")
    count = check_int("num_images_per_prompt", num_images_per_prompt, 1, MAX_IMAGES_PER_CALL)
    total = len(prompts) * count
    if total > MAX_IMAGES_PER_CALL:
        raise ValueError(
            f"`prompt` x `num_images_per_prompt` asks for {total} images; at most {MAX_IMAGES_PER_CALL} per call."
        )
    steps = check_int("num_inference_steps", num_inference_steps, 1, MAX_STEPS)
    guidance = check_number("guidance_scale", guidance_scale, *GUIDANCE_RANGE)
    width, height = check_size("width", width), check_size("height", height)

    def expand(name: str, value: Any, is_single: Callable[[Any], bool]) -> list[Any]:
        if is_single(value):
            return [value] * total
        if isinstance(value, list | tuple):
            if len(value) == len(prompts):
                return [item for item in value for _ in range(count)]
            if len(value) == total:
                return list(value)
        lengths = f"{len(prompts)} (one per prompt) or {total} (one per image)"
        raise ValueError(f"`{name}` must be a single value or a list of {lengths}, got {describe(value)}.")

    styles = expand("style", style, lambda v: not isinstance(v, list | tuple))
    negatives = expand("negative_prompt", "" if negative_prompt is None else negative_prompt, _is_str)
    strengths = expand("strength", strength, lambda v: not isinstance(v, list | tuple))
    for value in negatives:
        if not isinstance(value, str):
            raise ValueError(f"`negative_prompt` must be strings, got {describe(value)}.")
    strengths = [check_number("strength", value, *STRENGTH_RANGE) for value in strengths]
    if seed is None:
        seeds = [secrets.randbelow(2**32) for _ in range(total)]
    elif isinstance(seed, list | tuple):
        seeds = [check_int("seed", value, 0, MAX_SEED) for value in expand("seed", seed, lambda v: False)]
    else:  # one seed for all: sample i gets seed + i (check_int refuses non-integers, numpy ones are fine)
        first = check_int("seed", seed, 0, MAX_SEED - total)
        seeds = [first + i for i in range(total)]
    prompts_per_sample = [p for p in prompts for _ in range(count)]
    samples = [
        _Sample(prompt=p, negative_prompt=n, seed=s, strength=k, style=y)
        for p, n, s, k, y in zip(prompts_per_sample, negatives, seeds, strengths, styles, strict=True)
    ]
    return CheckedCall(samples, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


__all__ = [
    "CheckedCall",
    "StepCallback",
    "StyleCodesPipeline",
    "StyleCodesPipelineOutput",
    "StyleInput",
    "check_call_arguments",
]
