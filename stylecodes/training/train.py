"""`stylecodes train`: the StyleCodes training loop (paper §3.4), top to bottom.

The base UNet, VAE and text encoder (any SD1.5-family model) and SigLIP stay frozen. The style autoencoder and the
control module train jointly on the noise-prediction MSE of the target image, conditioned on its style image
through SigLIP -> autoencoder -> control module, with the 6-bit quantisation skipped (or, with
`quantize_aware`, passed straight through). Runs on `accelerate` (mixed precision, gradient accumulation,
`accelerate launch` for several GPUs).

Robustness: corrupt images are counted and skipped; a NaN loss stops the run with a message and leaves the last
good checkpoint alone; Ctrl-C or SIGTERM saves a checkpoint first; checkpoints are written under a temporary name
and renamed; `resume` restores weights, optimiser, scheduler and step, and the noise and the rows of step k depend
only on (seed, k), so a resumed run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecodes.codec import MAX_LEVEL
from stylecodes.models.image_encoder import siglip_hidden_states
from stylecodes.training import data
from stylecodes.training.config import TrainConfig
from stylecodes.training.diffusion import (
    drop_prompts,
    encode_latents,
    encode_prompts,
    make_noise_scheduler,
    noisy_latents,
)
from stylecodes.training.parts import TrainingParts, load_parts

logger = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss became NaN). The message says what happened and what to do."""


@dataclass
class TrainResult:
    step: int
    losses: list[float]
    bad_images: int
    interrupted: bool
    output_dir: Path


# --------------------------------------------------------------------------------------------------- the loss


def quantize_straight_through(latent: Tensor) -> Tensor:
    """6-bit quantise and dequantise as the codec does (clip to -1..1, 64 levels); gradients pass unchanged."""
    levels = torch.floor(((latent + 1) * MAX_LEVEL / 2).clamp(0, MAX_LEVEL))
    quantized = levels * 2 / MAX_LEVEL - 1
    return latent + (quantized - latent).detach()


def training_loss(
    parts: TrainingParts, batch: data.BatchOf, config: TrainConfig, generator: torch.Generator, scheduler
) -> Tensor:
    """Noise-prediction MSE of the targets, conditioned on their style images and (sometimes dropped) prompts."""
    control = parts.control_model
    device = batch.target_pixels.device
    with torch.no_grad():  # the frozen parts
        latents = encode_latents(parts.vae, batch.target_pixels, generator)  # (B, 4, S/8, S/8)
        texts = drop_prompts(batch.texts, config.prompt_dropout, generator)
        text = encode_prompts(parts.tokenizer, parts.text_encoder, texts)  # (B, 77, D)
        hidden = siglip_hidden_states(parts.image_encoder, batch.style_pixels.to(device))  # (B, 196, 768)
    noisy, timesteps, noise = noisy_latents(scheduler, latents, generator)
    autoencoder = control.sref_autoencoder
    style_latent = autoencoder.encode(hidden.float())  # (B, 20): the stylecode before quantisation
    if config.quantize_aware:
        style_latent = quantize_straight_through(style_latent)
    style_map = autoencoder.decode(style_latent, *control.mid_block_size(*latents.shape[-2:]))  # (B, C, h, w)
    prediction = control(parts.unet, noisy, timesteps, text, style_map, config.conditioning_scale)
    return F.mse_loss(prediction.float(), noise.float())


def step_generator(config: TrainConfig, step: int, process: int) -> torch.Generator:
    """The randomness of one step (noise, timesteps, prompt and layer dropout): a function of (seed, step, process)
    only, so a resumed run continues exactly as an uninterrupted one."""
    return torch.Generator().manual_seed(hash((config.seed, step, process)) % 2**63)


# -------------------------------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    parts: TrainingParts | None = None,
    dataset: torch.utils.data.Dataset | None = None,
    on_step: Callable[[int, float], None] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Run (or resume) a training run in `config.output_dir`. `parts`/`dataset` replace the configured ones
    (tests and the demo recipe pass tiny models); the run's checkpoints hold the control module only."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    config.check()
    output = Path(config.output_dir)
    # 1. Accelerate: devices, mixed precision, accumulation. Micro-batch = batch / (processes * accumulation).
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if config.log_with == "tensorboard" else None,
        project_dir=str(output),
    )
    micro_batch, remainder = divmod(
        config.batch_size, accelerator.num_processes * config.gradient_accumulation_steps
    )
    if micro_batch < 1 or remainder:
        raise ValueError(
            f"`batch_size` ({config.batch_size}) must split evenly over {accelerator.num_processes} process(es) x "
            f"{config.gradient_accumulation_steps} accumulation step(s)."
        )
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        config.save(output / "train_config.json")

    # 2. Models: frozen base and SigLIP (in the mixed-precision dtype), the control module in float32.
    parts = parts or load_parts(config)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    for module in parts.frozen:
        module.to(accelerator.device, dtype=weight_dtype if module is not parts.image_encoder else torch.float32)
    parts.control_model.to(accelerator.device)
    parts.control_model.train().requires_grad_(True)
    if config.gradient_checkpointing:
        parts.control_model.enable_gradient_checkpointing()
        parts.unet.enable_gradient_checkpointing()

    # 3. Optimiser (AdamW, the paper's learning rate) and a constant schedule after an optional warm-up.
    optimizer = torch.optim.AdamW(
        parts.control_model.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
    )
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / config.lr_warmup_steps) if config.lr_warmup_steps else 1.0
    )
    control, optimizer, lr_schedule = accelerator.prepare(parts.control_model, optimizer, lr_schedule)

    # 4. Resume: weights, optimiser, scheduler and RNG states from the newest complete checkpoint.
    step, bad_images = 0, 0
    if resume:
        latest = latest_checkpoint(output)
        if latest is None:
            raise TrainingError(f"--resume: {output} has no checkpoint yet; start without --resume.")
        accelerator.load_state(str(latest))
        state = json.loads((latest / STATE_FILE).read_text())
        step, bad_images = state["step"], state["bad_images"]
        logger.info("resumed from %s at step %d", latest, step)

    # 5. Data: step k's rows depend only on (seed, k), on any number of processes.
    dataset = dataset if dataset is not None else data.open_dataset(
        config.dataset, data.TripleColumns(config.style_column, config.image_column, config.text_column),
        seed=config.seed,
    )
    sampler = data.StepSampler(
        len(dataset), micro_batch, seed=config.seed, start_step=step * config.gradient_accumulation_steps,
        process=accelerator.process_index, num_processes=accelerator.num_processes,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=data.Collate(config.resolution),
        num_workers=config.dataloader_workers, persistent_workers=config.dataloader_workers > 0,
    )
    batches = iter(loader)
    noise_scheduler = make_noise_scheduler()
    log = CsvLog(output / "logs" / "train.csv") if accelerator.is_main_process else None
    if config.log_with == "tensorboard":
        accelerator.init_trackers("stylecodes", config={k: str(v) for k, v in config.to_json().items()})

    # 6. The loop. One optimiser step = gradient_accumulation_steps micro-batches.
    losses: list[float] = []
    progress = tqdm(total=config.max_steps, initial=step, disable=not (show_progress and accelerator.is_main_process),
                    desc="Training", unit="step")
    last_saved = step
    with stop_on_signals() as stop:
        while step < config.max_steps and not stop.requested:
            started = time.perf_counter()
            step_losses = []
            for micro in range(config.gradient_accumulation_steps):
                batch = next(batches)
                bad_images += batch.bad
                for reason in batch.bad_reasons:
                    logger.warning("skipped a bad image: %s", reason)
                if not batch.texts:  # every row of this micro-batch was unreadable
                    continue
                batch.target_pixels = batch.target_pixels.to(accelerator.device, weight_dtype)
                generator = step_generator(config, step * config.gradient_accumulation_steps + micro,
                                           accelerator.process_index)
                torch.manual_seed(generator.initial_seed())  # dropout draws from the global RNG: seed it per step
                with accelerator.accumulate(control), accelerator.autocast():
                    loss = training_loss(parts, batch, config, generator, noise_scheduler)
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"The loss became {loss.item()} at step {step + 1}. Nothing was saved for this step; "
                            f"the last good checkpoint ({latest_checkpoint(output) or 'none yet'}) is untouched. "
                            "Resume from it with a lower --learning-rate, or with --mixed-precision no/bf16."
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(control.parameters(), config.max_grad_norm)
                    optimizer.step()
                    lr_schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                step_losses.append(loss.detach().float().item())
            step += 1
            loss_value = sum(step_losses) / max(1, len(step_losses))
            losses.append(loss_value)
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", bad=bad_images)
            if log is not None:
                log.write(step=step, loss=loss_value, lr=lr_schedule.get_last_lr()[0], bad_images=bad_images,
                          seconds=time.perf_counter() - started)
            accelerator.log({"loss": loss_value, "bad_images": bad_images}, step=step)
            if on_step is not None:
                on_step(step, loss_value)
            if step % config.checkpoint_every == 0 or step == config.max_steps or stop.requested:
                save_checkpoint(accelerator, output, step, bad_images, config.keep_checkpoints)
                last_saved = step
            if step % config.validate_every == 0 and config.validation_styles and accelerator.is_main_process:
                from stylecodes.training.validation import save_validation_grid

                save_validation_grid(parts, config, step, accelerator)
    progress.close()
    if stop.requested and last_saved != step:
        save_checkpoint(accelerator, output, step, bad_images, config.keep_checkpoints)
    if bad_images:
        logger.warning("%d row(s) had unreadable images and were skipped (see the log above).", bad_images)
    accelerator.end_training()
    parts.control_model = accelerator.unwrap_model(control)
    return TrainResult(step, losses, bad_images, stop.requested, output)


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(accelerator, output: Path, step: int, bad_images: int, keep: int) -> Path:
    """`checkpoint-<step>` via a temporary folder and a rename: a failed write never touches older checkpoints."""
    final = output / f"{CHECKPOINT_PREFIX}{step:07d}"
    staging = output / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps({"step": step, "bad_images": bad_images}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in sorted(output.glob(f"{CHECKPOINT_PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint (temporary folders of interrupted writes are ignored)."""
    done = [p for p in output.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: p.name) if done else None


# ------------------------------------------------------------------------------------------------- plumbing


class _StopFlag:
    requested = False


@contextmanager
def stop_on_signals():
    """Ctrl-C / SIGTERM set a flag; the loop finishes its step, saves a checkpoint and returns (a second Ctrl-C
    stops at once)."""
    flag = _StopFlag()
    previous = {}

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        logger.warning("stop requested (%s): saving a checkpoint after this step", signal.Signals(signum).name)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, the caller stops the run its own way
        previous = {}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class CsvLog:
    """Appends one row per step to `logs/train.csv` (step, loss, lr, bad_images, seconds)."""

    FIELDS = ("step", "loss", "lr", "bad_images", "seconds")

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if not path.is_file():
            path.write_text(",".join(self.FIELDS) + "\n")

    def write(self, **row: float) -> None:
        with self.path.open("a", newline="") as file:
            csv.writer(file).writerow([_format(row[name]) for name in self.FIELDS])


def _format(value: float) -> str:
    return str(value) if isinstance(value, int) or not math.isfinite(value) else f"{value:.6g}"
