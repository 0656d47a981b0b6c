"""StyleForge: a personal style as a LoRA, fine-tuned from a user's own images with dual binding.

    base = ForgeBase.load(1, device="cuda", dtype=torch.bfloat16)
    result = forge(base, collect_path("./my-images"), ForgeConfig(), auxiliary=None, on_progress=print)
    result.adapter.save("my-style.safetensors")          # then: stylecodes imagine "..." --lora my-style.safetensors

Dual binding (Park et al., 2024): each step trains the UNet's LoRA on StyleRef images (the user's) with the prompt
"[V] style" and, with the same number of samples, on auxiliary artworks with the prompt "style", whose loss
(weighted by `prior_loss_weight`) keeps "style" meaning art in general while "[V] style" learns the user's. The
auxiliary set is a configured folder of artworks (mostly people); without one, DreamBooth's prior images generated
by the base model itself take its place, and the result says which of the two ran (`prior_source`).

Crash-safe: every `checkpoint_every` steps `on_checkpoint` receives a `ForgeCheckpoint`; passing it back as `resume`
(on any machine) continues exactly. `should_stop()` is polled every step; True ends the run with `ForgeCancelled`.
The base UNet is left as it was found, whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import PIL.Image
import torch
import torch.nn.functional as F

from stylecodes.lora.adapter import TARGET_MODULES, LoraAdapter
from stylecodes.lora.manifest import AdapterManifest
from stylecodes.training.forge.base import ForgeBase, image_grid
from stylecodes.training.forge.checkpoint import CheckpointMismatchError, ForgeCheckpoint
from stylecodes.training.forge.config import ForgeConfig
from stylecodes.training.forge.data import LatentSet, array_to_images, images_to_array
from stylecodes.training.forge.imageset import ImageSet

ADAPTER_NAME = "forge"  # the peft adapter being trained (removed again when the run ends)


class ForgeCancelled(Exception):
    """`should_stop()` returned True; nothing was produced."""


@dataclass(frozen=True)
class ForgeProgress:
    phase: str  # "priors" (generating prior images), "training", or "previews" (images at a checkpoint)
    step: int  # steps (or prior images) done
    total: int
    eta_seconds: float | None  # until the whole run ends; None until there is a measurement
    loss: float | None = None
    previews: list[PIL.Image.Image] | None = None  # at checkpoints: one image per preview prompt


@dataclass
class ForgeResult:
    adapter: LoraAdapter
    prior_source: str  # "auxiliary" or "generated"
    previews: list[PIL.Image.Image]  # one per preview prompt, with the finished LoRA
    losses: list[float]  # per step (StyleRef + weighted auxiliary loss)
    seconds: float  # wall time of this call
    resumed_from: int | None  # the checkpoint's step, when resumed
    warnings: list[str] = field(default_factory=list)

    @property
    def preview_grid(self) -> PIL.Image.Image:
        return image_grid(self.previews)


ProgressCallback = Callable[[ForgeProgress], None]
CheckpointCallback = Callable[[ForgeCheckpoint], None]


def forge(
    base: ForgeBase,
    images: ImageSet,
    config: ForgeConfig,
    *,
    auxiliary: ImageSet | None = None,
    resume: ForgeCheckpoint | None = None,
    on_progress: ProgressCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ForgeResult:
    """Train a style LoRA on `base.unet`; see the module doc. Raises `ForgeCancelled` or `CheckpointMismatchError`."""
    started = time.perf_counter()
    report = on_progress or (lambda progress: None)
    stopping = should_stop or (lambda: False)
    size = config.resolution or base.native_resolution
    generator = torch.Generator().manual_seed(config.seed)

    # 1. The auxiliary side of dual binding: the configured artworks, the checkpoint's generated images, or new ones.
    if auxiliary is not None:
        prior_images, prior_source = [item.image for item in auxiliary.images], "auxiliary"
        prior_identity = auxiliary.fingerprint
    else:
        prior_source, prior_identity = "generated", "generated"
        if resume is not None and resume.prior_images is not None:
            prior_images = array_to_images(resume.prior_images)
        else:
            prior_images = _generate_prior_images(base, config, size, report, stopping)
    fingerprint = _fingerprint(images, prior_identity, config, base, size)
    if resume is not None and resume.fingerprint != fingerprint:
        raise CheckpointMismatchError(
            "The checkpoint belongs to another forge run (different images, settings or base model); "
            "start again without it."
        )

    # 2. Encode once: image latents (and mirror images), the two prompts.
    instance_latents = LatentSet.encode(base, [item.image for item in images.images], size)
    prior_latents = LatentSet.encode(base, prior_images, size)
    style_text, class_text = base.encode_prompts([config.style_prompt, config.auxiliary_prompt])  # (77, D) each
    scheduler = base.noise_scheduler()

    # 3. The LoRA, its optimiser, and the state a checkpoint restores.
    losses: list[float] = []
    first_step, train_seconds = 0, 0.0
    try:
        parameters = _add_lora(base, config)
        optimizer = torch.optim.AdamW(parameters.values(), lr=config.learning_rate, weight_decay=1e-2)
        if resume is not None:
            _restore(resume, parameters, optimizer, generator)
            first_step, losses, train_seconds = resume.step, list(resume.losses), resume.train_seconds
        # 4. The loop: StyleRef and auxiliary samples side by side, one loss each.
        base.unet.train()
        batch = config.batch_size
        text = torch.cat([style_text.expand(batch, -1, -1), class_text.expand(batch, -1, -1)])  # (2B, 77, D)
        preview_seconds = 0.0
        for step in range(first_step + 1, config.steps + 1):
            if stopping():
                raise ForgeCancelled(f"Cancelled at step {step - 1} of {config.steps}.")
            tick = time.perf_counter()
            loss = _train_step(
                base, scheduler, instance_latents, prior_latents, text, generator, optimizer, parameters, config
            )
            losses.append(loss)
            train_seconds += time.perf_counter() - tick
            remaining = config.steps - step
            per_step = train_seconds / step
            checkpoints_left = remaining // config.checkpoint_every
            eta = per_step * remaining + preview_seconds * (checkpoints_left + 1)
            report(ForgeProgress("training", step, config.steps, eta, loss))
            if step % config.checkpoint_every == 0 and step < config.steps:
                tick = time.perf_counter()
                previews = _previews(base, config, size)
                preview_seconds = time.perf_counter() - tick
                report(ForgeProgress("previews", step, config.steps, eta, loss, previews))
                if on_checkpoint is not None:
                    on_checkpoint(
                        _checkpoint(
                            step,
                            fingerprint,
                            parameters,
                            optimizer,
                            generator,
                            losses,
                            train_seconds,
                            prior_images if prior_source == "generated" else None,
                        )
                    )

        # 5. The finished adapter, its manifest and the final previews.
        previews = _previews(base, config, size)
        manifest = AdapterManifest(
            trigger_words=(config.style_prompt,),
            base_model=base.label,
            model_version=base.model_version,
            rank=config.rank,
            alpha=config.lora_alpha,
            steps=config.steps,
            resolution=size,
            image_count=len(images),
            prior_source=prior_source,
            learning_rate=config.learning_rate,
            extra=dict(config.extra),
        )
        adapter = LoraAdapter.from_unet(base.unet, ADAPTER_NAME, manifest)
    finally:
        base.unet.unload_lora()  # peft layers out again: the base UNet is left exactly as it was found
        base.unet.eval()
    return ForgeResult(
        adapter=adapter,
        prior_source=prior_source,
        previews=previews,
        losses=losses,
        seconds=time.perf_counter() - started,
        resumed_from=None if resume is None else resume.step,
        warnings=list(images.warnings),
    )


def _train_step(
    base: ForgeBase,
    scheduler,
    instance_latents: LatentSet,
    prior_latents: LatentSet,
    text: torch.Tensor,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    parameters: dict[str, torch.nn.Parameter],
    config: ForgeConfig,
) -> float:
    batch = config.batch_size
    latents = torch.cat(
        [instance_latents.draw(batch, generator), prior_latents.draw(batch, generator)]
    )  # (2B, 4, h, w)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (2 * batch,), generator=generator)
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    with base.autocast():
        prediction = base.unet(noisy.to(base.dtype), timesteps, encoder_hidden_states=text).sample.float()
    style_loss = F.mse_loss(prediction[:batch], target[:batch])
    auxiliary_loss = F.mse_loss(prediction[batch:], target[batch:])
    loss = style_loss + config.prior_loss_weight * auxiliary_loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters.values(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _add_lora(base: ForgeBase, config: ForgeConfig) -> dict[str, torch.nn.Parameter]:
    """Inject the trainable LoRA into the UNet's attention projections; everything else stays frozen."""
    from peft import LoraConfig

    lora_config = LoraConfig(
        r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian", target_modules=list(TARGET_MODULES)
    )
    base.unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # the initial A matrices depend on the seed only
        torch.manual_seed(config.seed)
        base.unet.add_adapter(lora_config, adapter_name=ADAPTER_NAME)
    base.unet.set_adapter(ADAPTER_NAME)
    parameters = {}
    for name, parameter in base.unet.named_parameters():
        if f".{ADAPTER_NAME}." in name and ".lora_" in name:
            parameter.data = parameter.data.float()  # fp32 master weights under a bf16 base
            parameter.requires_grad_(True)
            parameters[name] = parameter
    return parameters


def _restore(
    checkpoint: ForgeCheckpoint,
    parameters: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    if set(checkpoint.lora) != set(parameters):
        raise CheckpointMismatchError("The checkpoint's LoRA layers do not match this model; start again without it.")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(checkpoint.lora[name])
    # load_state_dict moves the moments to each parameter's device (AdamW's `step` stays on the CPU)
    optimizer.load_state_dict({"state": checkpoint.optimizer, "param_groups": optimizer.state_dict()["param_groups"]})
    generator.set_state(checkpoint.rng_state)


def _checkpoint(step, fingerprint, parameters, optimizer, generator, losses, train_seconds, prior_images):
    state = optimizer.state_dict()["state"]
    return ForgeCheckpoint(
        step=step,
        fingerprint=fingerprint,
        lora={name: parameter.detach().cpu().clone() for name, parameter in parameters.items()},
        optimizer={
            index: {key: value.detach().cpu().clone() for key, value in entry.items()} for index, entry in state.items()
        },
        rng_state=generator.get_state(),
        losses=list(losses),
        train_seconds=train_seconds,
        prior_images=None if prior_images is None else images_to_array(prior_images),
    )


def _generate_prior_images(base, config, size, report, stopping) -> list[PIL.Image.Image]:
    """DreamBooth's prior images: the base model's own artworks, cycling through `prior_prompts`."""
    images: list[PIL.Image.Image] = []
    chunk = 4
    while len(images) < config.prior_images:
        if stopping():
            raise ForgeCancelled("Cancelled while generating prior images.")
        count = min(chunk, config.prior_images - len(images))
        indices = range(len(images), len(images) + count)
        prompts = [config.prior_prompts[index % len(config.prior_prompts)] for index in indices]
        seeds = [config.seed * 1000 + index for index in indices]
        images += base.sample(prompts, seeds, steps=config.prior_steps, guidance_scale=config.guidance_scale, size=size)
        report(ForgeProgress("priors", len(images), config.prior_images, None, None))
    return images


def _previews(base: ForgeBase, config: ForgeConfig, size: int) -> list[PIL.Image.Image]:
    prompts = [f"{prompt}, {config.style_prompt}" for prompt in config.preview_prompts]
    seeds = [config.seed + index for index in range(len(prompts))]
    return base.sample(prompts, seeds, steps=config.preview_steps, guidance_scale=config.guidance_scale, size=size)


def _fingerprint(images: ImageSet, prior_identity: str, config: ForgeConfig, base: ForgeBase, size: int) -> str:
    identity = {
        "images": images.fingerprint,
        "prior": prior_identity,
        "config": config.fingerprint_fields(),
        "base": [base.label, base.model_version],
        "size": size,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
