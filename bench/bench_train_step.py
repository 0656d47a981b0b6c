"""Training step time and peak memory: the demo's size on the CPU, SD1.5's size on a GPU.

    python3 bench/bench_train_step.py --size demo                       # CPU, demo model, batch 16 at 64 px
    python3 bench/bench_train_step.py --size sd15 --device cuda         # batch 25 at 512 px, bf16 autocast
    python3 bench/bench_train_step.py --size sd15 --device cuda --gradient-checkpointing

SD1.5 size builds every part with random weights from the published configs (UNet from `models.sd15`, SD's VAE,
CLIP ViT-L/14's text tower, SigLIP-base): time and memory do not depend on the weights, so nothing is downloaded.
One optimiser step of `training_loss` (frozen base in the autocast dtype, control module in float32, AdamW), the
same code `stylecodes train` runs. Prints s/step (median of --steps after --warmup) and peak memory.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def sd15_parts(device: torch.device, weight_dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, SiglipVisionConfig, SiglipVisionModel

    from stylecodes.demo.components import build_demo_tokenizer
    from stylecodes.models.control import StyleCodesControlModel
    from stylecodes.models.sd15 import SD15_UNET_CONFIG
    from stylecodes.training.parts import TrainingParts, freeze, init_new_layers

    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
    )
    tokenizer = build_demo_tokenizer()  # token ids only; the text tower below has CLIP ViT-L/14's size
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12))
    siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                  num_attention_heads=12, image_size=224, patch_size=16))
    control = StyleCodesControlModel.from_unet(unet, autoencoder_input_dim=768)
    init_new_layers(control, 1e-4)
    parts = TrainingParts(vae, text_encoder, tokenizer, unet, siglip, control)
    freeze(parts)
    for module in parts.frozen:
        module.to(device, weight_dtype if module is not siglip else torch.float32)
    control.to(device)
    return parts


def demo_parts():
    from stylecodes.demo.components import build_demo_architecture
    from stylecodes.training.parts import TrainingParts, freeze, init_new_layers

    demo = build_demo_architecture()
    init_new_layers(demo.control_model, 0.0)
    parts = TrainingParts(demo.vae, demo.text_encoder, demo.tokenizer, demo.unet, demo.image_encoder,
                          demo.control_model)
    freeze(parts)
    return parts


def main() -> None:
    from stylecodes.training.config import TrainConfig
    from stylecodes.training.data import Collate, ProceduralDataset
    from stylecodes.training.diffusion import make_noise_scheduler
    from stylecodes.training.train import training_loss

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=("demo", "sd15"), default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 (demo) or 25 (sd15, the paper's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sd15 = args.size == "sd15"
    batch = args.batch_size or (25 if sd15 else 16)
    resolution = 512 if sd15 else 64
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    parts = sd15_parts(device, dtype) if sd15 else demo_parts()
    if args.gradient_checkpointing:
        parts.control_model.enable_gradient_checkpointing()
        parts.unet.enable_gradient_checkpointing()
    config = TrainConfig(resolution=resolution)
    dataset = ProceduralDataset(size=resolution)
    batch_data = Collate(resolution)([dataset[i] for i in range(batch)])
    batch_data.target_pixels = batch_data.target_pixels.to(device, dtype)
    batch_data.style_pixels = batch_data.style_pixels.to(device)
    optimizer = torch.optim.AdamW(parts.control_model.parameters(), lr=1e-6)
    scheduler = make_noise_scheduler()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = training_loss(parts, batch_data, config, torch.Generator().manual_seed(step), scheduler)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"size={args.size} device={device} batch={batch} res={resolution} dtype={dtype} "
          f"checkpointing={args.gradient_checkpointing}: {seconds:.3f} s/step, peak {peak:.2f} GiB"
          f"{' (process RSS)' if device.type != 'cuda' else ''}; 100k steps = {seconds * 1e5 / 3600:.1f} h")


if __name__ == "__main__":
    main()
