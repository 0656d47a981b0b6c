"""Procedural styles and scenes: the offline training set of the demo model (version 0), made here from numpy.

A *style* is a palette of three colours (background, pattern, accent) and a pattern (stripes, checks, dots, rings,
gradient, noise or plain) with its scale and angle. A *scene* is what a prompt describes: one to three shapes
(circle, square, triangle, cross) with a size and a place. `render(style, scene)` paints the scene in the style:
the background carries the pattern in the first two colours and the shapes are filled with the accent colour.

A training triple is (style image, target image, prompt) as in the paper's dataset: the style image is the style
painted on another, random scene with another phase of the pattern, so the model has to carry the style, not the
picture. The held-out styles (`HELD_OUT_STYLES`) have named colours, and training palettes are drawn away from
them (`MIN_PALETTE_DISTANCE`), so the held-out evaluation measures styles the model never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

PATTERNS = ("stripes", "checks", "dots", "rings", "gradient", "noise", "plain")
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 0.16, "large": 0.3}  # shape radius as a fraction of the image side
PLACES = {
    "in the center": (0.5, 0.5),
    "on the left": (0.27, 0.5),
    "on the right": (0.73, 0.5),
    "at the top": (0.5, 0.27),
    "at the bottom": (0.5, 0.73),
}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
# Training palettes keep at least this RGB distance (0..1 units, summed over the three colours) from every held-out
# palette, so the held-out styles are new colour combinations, not near-copies of training ones.
MIN_PALETTE_DISTANCE = 0.45


@dataclass(frozen=True)
class Style:
    """One procedural style: three RGB colours in 0..1 and a pattern."""

    palette: tuple[tuple[float, float, float], ...]  # (background, pattern, accent)
    pattern: str
    period: float  # pattern repeat as a fraction of the image side (stripes, checks, dots, rings)
    angle: float  # radians (stripes, gradient)
    name: str = ""

    def with_phase(self, rng: np.random.Generator) -> Style:
        """The same style with a new pattern angle jitter (a different crop of the same style)."""
        return replace(self, angle=self.angle + float(rng.normal(0, 0.15)))


@dataclass(frozen=True)
class Shape:
    kind: str
    size: str
    place: str


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]

    @property
    def prompt(self) -> str:
        """`a large circle on the left`, `two small squares at the top`, ... (one kind per scene)."""
        first = self.shapes[0]
        count = len(self.shapes)
        noun = first.kind + ("es" if first.kind == "cross" and count > 1 else "s" if count > 1 else "")
        where = first.place if count == 1 else "across the picture"
        return f"{COUNT_WORDS[count]} {first.size} {noun} {where}"


def _hex(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _held_out(name: str, colours: tuple[str, str, str], pattern: str, period: float, angle: float) -> Style:
    return Style(tuple(_hex(c) for c in colours), pattern, period, angle, name)


# Ten styles whose colours were chosen by hand; never drawn for training (see MIN_PALETTE_DISTANCE).
HELD_OUT_STYLES: tuple[Style, ...] = (
    _held_out("sunset stripes", ("#2b1055", "#f76b1c", "#fad961"), "stripes", 0.25, 0.6),
    _held_out("mint checks", ("#e8fff4", "#3ecf8e", "#123c2e"), "checks", 0.3, 0.0),
    _held_out("navy dots", ("#0b1d51", "#8cb4ff", "#ff4f79"), "dots", 0.22, 0.0),
    _held_out("terracotta rings", ("#f2d0a4", "#c0562d", "#2e4a62"), "rings", 0.2, 0.0),
    _held_out("lilac gradient", ("#c9b6e4", "#4a2c7a", "#f7f3a1"), "gradient", 1.0, 2.2),
    _held_out("moss noise", ("#2f3d1e", "#93a35b", "#e9e4d0"), "noise", 0.25, 0.0),
    _held_out("coral plain", ("#ff7f6b", "#ff7f6b", "#1b2a41"), "plain", 1.0, 0.0),
    _held_out("steel stripes", ("#9fb3c8", "#3d5a80", "#ee6c4d"), "stripes", 0.33, -0.9),
    _held_out("gold checks", ("#1a1a1a", "#d4a017", "#f0f0f0"), "checks", 0.4, 0.0),
    _held_out("teal rings", ("#003f4a", "#3fb8af", "#ffd166"), "rings", 0.28, 0.0),
)


def random_style(rng: np.random.Generator, *, avoid: tuple[Style, ...] = HELD_OUT_STYLES) -> Style:
    """A random style whose palette is at least MIN_PALETTE_DISTANCE from every style in `avoid`."""
    while True:
        palette = rng.uniform(0, 1, size=(3, 3))
        if all(_palette_distance(palette, np.array(s.palette)) >= MIN_PALETTE_DISTANCE for s in avoid):
            break
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    if pattern == "plain":
        palette[1] = palette[0]
    return Style(
        palette=tuple(tuple(float(v) for v in colour) for colour in palette),  # type: ignore[misc]
        pattern=pattern,
        period=float(rng.uniform(0.2, 0.45)),
        angle=float(rng.uniform(-math.pi, math.pi)),
    )


def _palette_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).sum() / 3)


def random_scene(rng: np.random.Generator) -> Scene:
    count = int(rng.choice([1, 1, 2, 3]))
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    size = list(SIZES)[int(rng.integers(len(SIZES)))] if count == 1 else "small"
    if count == 1:
        places = [list(PLACES)[int(rng.integers(len(PLACES)))]]
    else:
        places = [str(p) for p in rng.choice(list(PLACES), size=count, replace=False)]
    return Scene(tuple(Shape(kind, size, place) for place in places))


def scene_from_prompt(prompt: str, rng: np.random.Generator) -> Scene:
    """The scene a prompt of `Scene.prompt`'s grammar describes (unknown words: a random scene)."""
    words = prompt.lower()
    kind = next((s for s in SHAPES if s in words), None)
    if kind is None:
        return random_scene(rng)
    count = next((n for n, w in COUNT_WORDS.items() if words.startswith(w + " ")), 1)
    size = "large" if "large" in words and count == 1 else "small"
    places = [next((p for p in PLACES if p in words), "in the center")] if count == 1 else list(PLACES)[:count]
    return Scene(tuple(Shape(kind, size, place) for place in places))


# ---------------------------------------------------------------------------------------------------------- paint


def render(style: Style, scene: Scene, size: int = 64, *, phase: float = 0.0) -> Image.Image:
    """`scene` painted in `style` as a `size` x `size` RGB image. `phase` shifts the pattern (0..1)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (S, S) each, 0..1
    mix = _pattern(style, x, y, phase)  # (S, S) in 0..1: 0 = background colour, 1 = pattern colour
    palette = np.asarray(style.palette, dtype=np.float32)  # (3, 3)
    image = palette[0] * (1 - mix[..., None]) + palette[1] * mix[..., None]  # (S, S, 3)
    for shape in scene.shapes:
        inside = _shape_mask(shape, x, y)
        image[inside] = palette[2]
    return Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))


def style_image(style: Style, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """The style painted on a random scene with a random pattern phase: a condition image for `style`."""
    return render(style.with_phase(rng), random_scene(rng), size, phase=float(rng.uniform()))


def _pattern(style: Style, x: np.ndarray, y: np.ndarray, phase: float) -> np.ndarray:
    u = x * math.cos(style.angle) + y * math.sin(style.angle)  # along the stripes' normal
    period = style.period
    if style.pattern == "stripes":
        return (((u / period + phase) % 1.0) < 0.5).astype(np.float32)
    if style.pattern == "checks":
        cells = np.floor(x / period + phase) + np.floor(y / period + phase)
        return (cells % 2).astype(np.float32)
    if style.pattern == "dots":
        cx, cy = (x / period + phase) % 1.0 - 0.5, (y / period + phase) % 1.0 - 0.5
        return (cx**2 + cy**2 < 0.3**2).astype(np.float32)
    if style.pattern == "rings":
        cx, cy = 0.5 + 0.3 * math.cos(6.283 * phase), 0.5 + 0.3 * math.sin(6.283 * phase)
        radius = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        return ((radius / period) % 1.0 < 0.5).astype(np.float32)
    if style.pattern == "gradient":
        return np.clip(u - u.min() + 0.0, 0, None) / max(float(u.max() - u.min()), 1e-6)
    if style.pattern == "noise":
        return _smooth_noise(x.shape[0], period, phase)
    return np.zeros_like(x)  # plain


def _smooth_noise(size: int, period: float, phase: float) -> np.ndarray:
    """Blobs: a coarse random grid (seeded by the phase), bilinearly upsampled and thresholded softly."""
    cells = max(2, round(1 / period)) + 1
    grid = np.random.default_rng(int(phase * 1e6)).uniform(size=(cells, cells)).astype(np.float32)
    upsampled = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR))
    return np.clip((upsampled - 0.5) * 3 + 0.5, 0, 1)


def _shape_mask(shape: Shape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cx, cy = PLACES[shape.place]
    r = SIZES[shape.size]
    dx, dy = x - cx, y - cy
    if shape.kind == "circle":
        return dx**2 + dy**2 < r**2
    if shape.kind == "square":
        return (np.abs(dx) < r * 0.85) & (np.abs(dy) < r * 0.85)
    if shape.kind == "triangle":  # apex up
        return (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
    return ((np.abs(dx) < r * 0.3) & (np.abs(dy) < r)) | ((np.abs(dy) < r * 0.3) & (np.abs(dx) < r))  # cross


@dataclass(frozen=True)
class Triple:
    style_image: Image.Image
    image: Image.Image
    text: str
    style: Style


def random_triple(rng: np.random.Generator, size: int = 64) -> Triple:
    """(style image, target, prompt): one random style painted on a random scene and on the prompt's scene."""
    style = random_style(rng)
    scene = random_scene(rng)
    target = render(style, scene, size, phase=float(rng.uniform()))
    return Triple(style_image(style, rng, size), target, scene.prompt, style)
