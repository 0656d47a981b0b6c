"""`stylecodes dataset`: write (style image, target image, prompt) triples as an `imagefolder` dataset.

    out/metadata.jsonl  one JSON row per triple: {"file_name": "images/000042.png",
                        "style_image_file_name": "styles/000042.png", "text": "...", "style_source": "..."}
    out/images/  out/styles/

Loadable with `datasets.load_dataset("imagefolder", data_dir="out")` (columns `image`, `style_image`, `text`) and
by `stylecodes train --dataset out`. Rows are written in batches and the metadata line last, so a row is complete
once its line exists; an interrupted run resumes by skipping the rows already written.

Triples come from a `TripleGenerator`: the procedural one (the demo's styles, no model needed) is here; the
paper's InstantStyle generation plugs in through the same interface once the InstantStyle mode exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from stylecodes.training import procedural

METADATA = "metadata.jsonl"


@dataclass
class GeneratedTriple:
    style_image: Image.Image
    image: Image.Image
    text: str
    style_source: str  # where the style image came from (a file name, or the procedural style)


class TripleGenerator(Protocol):
    """Makes the triples of rows `indices` (deterministic per row, so a resumed run makes the same rows)."""

    def __call__(self, indices: Sequence[int]) -> list[GeneratedTriple]: ...


class ProceduralTriples:
    """The demo's procedural triples (`stylecodes.training.procedural`) at `size` px."""

    def __init__(self, seed: int = 0, size: int = 64) -> None:
        self.seed, self.size = seed, size

    def __call__(self, indices: Sequence[int]) -> list[GeneratedTriple]:
        rows = []
        for index in indices:
            triple = procedural.random_triple(np.random.default_rng([self.seed, index]), self.size)
            rows.append(GeneratedTriple(triple.style_image, triple.image, triple.text, triple.style.pattern))
        return rows


def rows_written(folder: Path) -> int:
    """Complete rows in `folder` (lines of metadata.jsonl); a torn last line from a crash is dropped."""
    path = folder / METADATA
    if not path.is_file():
        return 0
    lines = path.read_bytes().split(b"\n")
    complete = [line for line in lines[:-1] if line.strip()]  # the part after the last newline is torn or empty
    if lines[-1].strip():  # rewrite without the torn tail so appending stays valid JSON lines
        path.write_bytes(b"\n".join(complete) + (b"\n" if complete else b""))
    return len(complete)


def write_dataset(
    generator: TripleGenerator,
    folder: Path,
    count: int,
    *,
    batch_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write rows until `folder` holds `count`; returns how many were made now (0 when already complete)."""
    if count < 1:
        raise ValueError(f"`count` must be at least 1, got {count}.")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    (folder / "styles").mkdir(exist_ok=True)
    start = rows_written(folder)
    made = 0
    with (folder / METADATA).open("a", encoding="utf-8") as metadata:
        for indices in _chunks(range(start, count), batch_size):
            for index, triple in zip(indices, generator(indices), strict=True):
                image_name, style_name = f"images/{index:06d}.png", f"styles/{index:06d}.png"
                triple.image.save(folder / image_name)
                triple.style_image.save(folder / style_name)
                row = {"file_name": image_name, "style_image_file_name": style_name, "text": triple.text,
                       "style_source": triple.style_source}
                metadata.write(json.dumps(row, ensure_ascii=False) + "\n")
            metadata.flush()
            os.fsync(metadata.fileno())
            made += len(indices)
            if on_progress is not None:
                on_progress(len(indices))
    return made


def _chunks(indices: range, size: int) -> Iterator[list[int]]:
    for start in range(indices.start, indices.stop, size):
        yield list(range(start, min(start + size, indices.stop)))


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} has no prompts (one per line).")
    return prompts
