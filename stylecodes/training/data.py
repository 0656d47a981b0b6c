"""Training data: (style image, target image, prompt) triples from a folder, a Hub dataset, or the procedural set.

A dataset folder is the `datasets` library's `imagefolder` layout, as `stylecodes dataset` writes it:

    my-set/metadata.jsonl   {"file_name": "images/000000.png", "style_image_file_name": "styles/000000.png",
                             "text": "a cow"}
    my-set/images/...  my-set/styles/...

`datasets.load_dataset("imagefolder", data_dir="my-set")` (or a Hub dataset id) gives the columns `image`,
`style_image` and `text`; other column names are chosen with `TripleColumns`. Images are decoded here through
`stylecodes.images.load_image`, so a corrupt or missing image is counted and skipped (`BatchOf.bad`), never the end
of a run.

Which rows a step trains on depends only on the seed and the step (`StepSampler`), so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from stylecodes.images import ImageError, load_image
from stylecodes.models.image_encoder import STYLE_IMAGE_SIZE, make_siglip_processor
from stylecodes.training import procedural
from stylecodes.training.diffusion import images_to_tensor

logger = logging.getLogger(__name__)
PROCEDURAL = "procedural"  # the dataset name of the built-in procedural set
PROCEDURAL_ROWS = 10_000_000  # rows of the procedural set: every row is made from its index, on demand


class DatasetError(ValueError):
    """The dataset could not be opened or lacks a column. The message says what to fix."""


@dataclass(frozen=True)
class TripleColumns:
    style_image: str = "style_image"
    image: str = "image"
    text: str = "text"


@dataclass
class Triple:
    style_image: Image.Image
    image: Image.Image
    text: str


@dataclass
class BatchOf:
    """A collated batch; `bad` counts the rows that were skipped because an image could not be read."""

    style_pixels: Tensor  # (B, 3, 224, 224): SigLIP's input, preprocessed as the published encoder does
    target_pixels: Tensor  # (B, 3, S, S) in -1..1: the VAE's input
    texts: list[str]
    bad: int
    bad_reasons: list[str]


class TripleDataset(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` (images not decoded) -> `Triple`, or None when an image is unreadable."""

    def __init__(self, rows: Any, columns: TripleColumns) -> None:
        self.rows = rows
        self.columns = columns

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Triple | str:
        row = self.rows[int(index)]
        try:
            style = _decode(row[self.columns.style_image])
            image = _decode(row[self.columns.image])
        except ImageError as exc:
            return f"row {index}: {exc}"
        return Triple(style, image, str(row[self.columns.text] or ""))


class ProceduralDataset(torch.utils.data.Dataset):
    """The demo's procedural triples; row i is always the same triple (made from `seed + i`)."""

    def __init__(self, seed: int = 0, size: int = 64) -> None:
        self.seed, self.size = seed, size

    def __len__(self) -> int:
        return PROCEDURAL_ROWS

    def __getitem__(self, index: int) -> Triple:
        triple = procedural.random_triple(np.random.default_rng([self.seed, int(index)]), self.size)
        return Triple(triple.style_image, triple.image, triple.text)


def open_dataset(name: str, columns: TripleColumns = TripleColumns(), *, seed: int = 0) -> torch.utils.data.Dataset:
    """`procedural`, a dataset folder (imagefolder layout) or a Hub dataset id -> a dataset of triples."""
    if name == PROCEDURAL:
        return ProceduralDataset(seed)
    import datasets

    folder = Path(name).expanduser()
    try:
        if folder.is_dir():
            if not (folder / "metadata.jsonl").is_file():
                raise DatasetError(
                    f"{folder} has no metadata.jsonl; make one with `stylecodes dataset` or see docs/training.md."
                )
            rows = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
        else:
            rows = datasets.load_dataset(name, split="train")
    except DatasetError:
        raise
    except Exception as exc:  # missing Hub dataset, offline, bad metadata: one message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"Could not open the dataset {name!r}: {reason}") from exc
    missing = [c for c in (columns.style_image, columns.image, columns.text) if c not in rows.column_names]
    if missing:
        raise DatasetError(
            f"The dataset {name!r} has no column {missing[0]!r} (it has {', '.join(rows.column_names)}); "
            "name the columns with --style-column, --image-column and --text-column."
        )
    for column in (columns.style_image, columns.image):  # decode here, where a bad image can be skipped
        if isinstance(rows.features[column], datasets.Image):
            rows = rows.cast_column(column, datasets.Image(decode=False))
    return TripleDataset(rows, columns)


def _decode(value: Any) -> Image.Image:
    """An image cell (PIL image, {"bytes", "path"} dict, path string) -> RGB, or ImageError."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):
        if value.get("bytes"):
            return load_image(value["bytes"])
        if value.get("path"):
            return load_image(value["path"])
        raise ImageError("the image cell is empty")
    if isinstance(value, str):
        return load_image(value)
    raise ImageError(f"the image cell holds a {type(value).__name__}, not an image")


class Collate:
    """Triples -> `BatchOf`; unreadable rows (strings with the reason) are dropped and counted."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.processor = make_siglip_processor()

    def __call__(self, items: list[Triple | str]) -> BatchOf:
        good = [item for item in items if isinstance(item, Triple)]
        reasons = [item for item in items if isinstance(item, str)]
        if not good:
            empty = torch.empty(0)
            return BatchOf(empty, empty, [], len(reasons), reasons)
        style_pixels = style_pixel_values(self.processor, [t.style_image for t in good])
        targets = images_to_tensor([_center_square(t.image) for t in good], self.resolution)
        return BatchOf(style_pixels, targets, [t.text for t in good], len(reasons), reasons)


def style_pixel_values(processor: Any, images: list[Image.Image]) -> Tensor:
    """The published encoder's preprocessing: 512x512 bicubic, then SigLIP's processor -> (B, 3, 224, 224)."""
    size = (STYLE_IMAGE_SIZE, STYLE_IMAGE_SIZE)
    resized = [image.convert("RGB").resize(size, Image.Resampling.BICUBIC) for image in images]
    return processor(images=resized, return_tensors="pt").pixel_values


def _center_square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


class StepSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of row indices from step `start_step` on: batch k of epoch e is slice k of permutation (seed, e).

    Each of `num_processes` processes takes its own slice of every global batch, so a multi-GPU run trains on the
    same rows per step as one process with the whole batch would.
    """

    def __init__(
        self, rows: int, batch_size: int, *, seed: int, start_step: int = 0, process: int = 0, num_processes: int = 1
    ) -> None:
        if rows < batch_size * num_processes:
            raise DatasetError(f"The dataset has {rows} rows, fewer than one batch ({batch_size * num_processes}).")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.start_step, self.process, self.num_processes = start_step, process, num_processes

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.num_processes
        per_epoch = self.rows // global_batch
        step = self.start_step
        while True:
            epoch, position = divmod(step, per_epoch)
            start = position * global_batch + self.process * self.batch_size
            if self.rows >= PROCEDURAL_ROWS:  # rows made on demand are independent draws: no shuffle needed
                yield list(range(start, start + self.batch_size))
            else:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
                yield order[start : start + self.batch_size].tolist()
            step += 1

    def __len__(self) -> int:  # (infinite; DataLoader only needs this for progress estimates)
        return 2**31 - 1
