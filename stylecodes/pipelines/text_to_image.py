"""`StyleCodesPipeline`: text-to-image with Stable Diffusion 1.5 steered by styles (diffusers style).

One call paints a batch in which every sample has its own prompt, negative prompt, seed, styles and strengths.
Each style belongs to a style mode (`stylecodes.modes`): the published stylecode (a code, a raw latent or a style
image, through the control module) is always there; other modes join with `add_mode`. A sample may combine styles
of several modes. The published settings are the defaults: DDIM (scaled-linear betas 0.00085..0.012, steps_offset
1, clip_sample off), 20 steps, guidance 3, strength 0.9, style applied to both halves of the guidance batch.

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

from stylecodes.checks import (
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
from stylecodes.codec import StyleCode
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.image_encoder import StyleImageEncoder
from stylecodes.models.precision import keep_float32
from stylecodes.modes import BatchContext, StepConditioning, StylecodeMode, StyleInput, StyleMode
from stylecodes.pipelines.previews import latent_previews
from stylecodes.styles import STYLE_TYPES

logger = logging.getLogger(__name__)

# What one sample's `style` may be: a code (object or text), a raw 20-dim latent or a style image for the stylecode
# mode (applied at the sample's `strength`), a style from `stylecodes.styles` (it carries its own strength), a tuple
# of such styles (one per mode, combined), or None (no style).
SampleStyle = Union[StyleCode, str, np.ndarray, Tensor, PIL.Image.Image, tuple, Any, None]  # noqa: UP007
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
    strength: float  # the call's strength for this sample, for stylecode inputs that carry none
    inputs: dict[str, StyleInput]  # mode name -> this sample's style for that mode
    resolved: dict[str, Any] = field(default_factory=dict)  # mode name -> the mode's resolved style
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
        self.modes: dict[str, StyleMode] = {}
        self.add_mode(StylecodeMode(control_model, self.style_image_encoder, model_version))

    def add_mode(self, mode: StyleMode) -> None:
        """Let this pipeline paint with `mode`'s styles (replacing a mode of the same name)."""
        if not isinstance(mode, StyleMode):
            raise TypeError(f"`mode` must be a StyleMode, got {type(mode).__name__}.")
        self.modes[mode.name] = mode

    @property
    def model_version(self) -> int:
        return self.config.model_version

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        style: SampleStyle | list[SampleStyle] = None,
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
        (numpy or torch) or a PIL style image, painted by the stylecode mode at `strength`; a style object from
        `stylecodes.styles` (any mode this pipeline has, at its own strength); a tuple of those, one per mode, to
        combine them; or None for plain SD1.5. A list always means one style per prompt or per sample, a tuple
        always one sample's combination. An int `seed` gives sample i the seed
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

        # 2. Each mode resolves its samples' styles (e.g. style images through SigLIP and the 6-bit code), batched.
        modes = self._modes_for(samples)
        for mode in modes:
            for sample, resolved in zip(samples, mode.resolve([s.inputs.get(mode.name) for s in samples]), strict=True):
                if resolved is not None:
                    sample.resolved[mode.name] = resolved

        # 3. Text embeddings (modes may add to a prompt, e.g. trigger words); prompts beyond the text encoder's
        # window are truncated with a warning.
        text_embeddings = self._encode_prompts(samples, modes, do_cfg, device)  # (2N or N, 77, D)

        # 4. Timesteps.
        self.scheduler.set_timesteps(call.num_inference_steps, device=device)

        # 5. Starting noise, one generator per sample so each image depends only on its own seed.
        latent_shape = (self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        noise = [torch.randn(latent_shape, generator=torch.Generator().manual_seed(s.seed)) for s in samples]
        latents = torch.stack(noise).to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma  # (N, 4, h, w)

        # 6. Every mode's conditioning, once per generation (e.g. style maps; samples without a style of a mode get
        # scale 0 there, exactly the plain UNet).
        batch = BatchContext(latent_shape[1:], do_cfg, device, dtype)
        try:
            conditioning = StepConditioning()
            for mode in modes:
                prepared = mode.prepare([s.resolved.get(mode.name) for s in samples], batch)
                conditioning = conditioning if prepared is None else conditioning.merge(prepared)
            # 7. Denoising loop: one UNet call per step, with every mode's conditioning.
            latents = self._denoise(latents, text_embeddings, conditioning, guidance_scale, callback)
        finally:
            for mode in modes:
                mode.finish()
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

    def _denoise(
        self,
        latents: Tensor,
        text_embeddings: Tensor,
        conditioning: StepConditioning,
        guidance_scale: float,
        callback: StepCallback | None,
    ) -> Tensor:
        timesteps = self.scheduler.timesteps
        cfg = guidance_scale > 1.0
        with self.progress_bar(total=len(timesteps)) as progress:
            for index, timestep in enumerate(timesteps):
                model_input = torch.cat([latents] * 2) if cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, timestep)
                eps = self._predict_noise(model_input, timestep, text_embeddings, conditioning)
                if cfg:
                    eps_uncond, eps_text = eps.chunk(2)
                    eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
                step = self.scheduler.step(eps, timestep, latents)
                latents = step.prev_sample
                progress.update()
                if callback is not None:
                    predicted = step.pred_original_sample
                    callback(index + 1, len(timesteps), lambda predicted=predicted: latent_previews(predicted))
        return latents

    # ---------------------------------------------------------------------------------------------------- styles

    def _modes_for(self, samples: list[_Sample]) -> list[StyleMode]:
        """The modes the samples' styles need, in a fixed order; refuses modes this pipeline lacks or that clash."""
        wanted = {name for sample in samples for name in sample.inputs}
        missing = sorted(wanted - set(self.modes))
        if missing:
            raise ValueError(
                f"This model has no {', '.join(missing)} style mode loaded; it paints with: {', '.join(self.modes)}."
            )
        for sample in samples:
            for name in sample.inputs:
                clash = self.modes[name].conflicts_with & set(sample.inputs)
                if clash:
                    others = ", ".join(sorted(clash))
                    raise ValueError(f"The {name} style cannot be combined with {others} in one picture.")
        return [mode for name, mode in self.modes.items() if name in wanted]

    def style_image_encoder(self) -> StyleImageEncoder:
        """SigLIP + the control module's autoencoder: images -> codes of this pipeline's version."""
        if self.image_encoder is None:
            raise ValueError("`style` images need the SigLIP `image_encoder`; this pipeline was built without one.")
        return StyleImageEncoder(self.image_encoder, self.control_model.autoencoder, version=self.model_version)

    def _predict_noise(self, sample: Tensor, timestep: Tensor, text: Tensor, conditioning: StepConditioning) -> Tensor:
        kwargs = {
            "added_cond_kwargs": conditioning.added_cond_kwargs or None,
            "cross_attention_kwargs": conditioning.cross_attention_kwargs or None,
        }
        if conditioning.control is None:
            return self.unet(sample, timestep, encoder_hidden_states=text, **kwargs).sample
        return self.control_model(self.unet, sample, timestep, text, conditioning.control, **kwargs)

    # ------------------------------------------------------------------------------------------------------ text

    def _encode_prompts(
        self, samples: list[_Sample], modes: list[StyleMode], cfg: bool, device: torch.device
    ) -> Tensor:
        prompts = []
        for sample in samples:
            prompt = sample.prompt
            for mode in modes:
                prompt = mode.rewrite_prompt(prompt, sample.resolved.get(mode.name))
            prompts.append(prompt)
            for label, text in (("prompt", prompt), ("negative prompt", sample.negative_prompt)):
                dropped = self._truncated_part(text)
                if dropped:
                    sample.warnings.append(
                        f"The {label} is longer than the text encoder's {self.tokenizer.model_max_length} tokens; "
                        f"this end of it was ignored: “{dropped}”."
                    )
        texts = prompts
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
        metadata: dict[str, Any] = {
            "model_version": self.model_version,
            "prompt": sample.prompt,
            "negative_prompt": sample.negative_prompt,
            "strength": sample.strength,
            "seed": sample.seed,
            "scheduler": "DDIM",
            **settings,
        }
        for name, mode in self.modes.items():  # every mode says what the sample had of it (e.g. style_code: None)
            metadata.update(mode.metadata(sample.resolved.get(name)))
        metadata["style_modes"] = sorted(sample.resolved)
        return metadata


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

    styles = expand("style", style, lambda v: not isinstance(v, list))  # a tuple is one sample's combination
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
        _Sample(prompt=p, negative_prompt=n, seed=s, strength=k, inputs=_inputs_by_mode(y, k))
        for p, n, s, k, y in zip(prompts_per_sample, negatives, seeds, strengths, styles, strict=True)
    ]
    return CheckedCall(samples, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height)


def _inputs_by_mode(style: Any, strength: float) -> dict[str, StyleInput]:
    """One sample's `style` -> {mode name: its input}: style objects carry their own mode and strength, anything
    else is the stylecode mode's, at the call's `strength`."""
    if style is None:
        return {}
    style_types = tuple(STYLE_TYPES.values())
    if not isinstance(style, tuple):
        if isinstance(style, style_types):
            return {style.mode: StyleInput(style, style.strength)}
        return {StylecodeMode.name: StyleInput(style, strength)}
    inputs: dict[str, StyleInput] = {}
    for item in style:
        if not isinstance(item, style_types):
            raise ValueError(
                f"A tuple `style` combines style objects from stylecodes.styles (one per mode), got {describe(item)}."
            )
        if item.mode in inputs:
            raise ValueError(f"A tuple `style` has two styles for the {item.mode} mode; give at most one per mode.")
        inputs[item.mode] = StyleInput(item, item.strength)
    return inputs


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


__all__ = [
    "CheckedCall",
    "SampleStyle",
    "StepCallback",
    "StyleCodesPipeline",
    "StyleCodesPipelineOutput",
    "check_call_arguments",
]
