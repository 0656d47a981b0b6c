"""A request's styles as plain data: what each style is, which style mode applies it, and its JSON form.

A picture can combine styles of different modes (a code and an InstantStyle image embedding, say), at most one per
mode; `stylecodes.modes` holds the code that applies each mode to the UNet. These types are torch-free (numpy and
PIL only), so the bot builds them, jobs carry them as JSON and the registry stores them without loading a model.

Adding a mode's style type (see docs/engine.md, "Adding a style mode"): a frozen dataclass with `kind` (its name in
JSON and in the registry), `mode` (the `StyleMode.name` that applies it), a checked `strength`, `to_json`,
`from_json` and `batch_part`, registered in `STYLE_TYPES` below.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np
import PIL.Image

from stylecodes.checks import DEFAULT_STRENGTH, STRENGTH_RANGE, check_number, describe
from stylecodes.codec import CodeError, StyleCode, parse_code

STYLECODE_MODE = "stylecode"  # the published method: a code decoded by the control module
DEADIFF_MODE = "deadiff"  # DEADiff's style tokens in the UNet's style layers (opt-in, non-commercial licence)
DEADIFF_DEFAULT_STRENGTH = 1.0  # DEADiff's `img_weight` default


@dataclass(frozen=True)
class CodeStyle:
    """A stylecode, painted by the control module (mode `stylecode`) at `strength` (0..1.5, default 0.9)."""

    kind: ClassVar[str] = "code"
    mode: ClassVar[str] = STYLECODE_MODE
    code: StyleCode
    strength: float = DEFAULT_STRENGTH

    def __post_init__(self) -> None:
        if not isinstance(self.code, StyleCode):
            raise ValueError(
                f"`code` must be a StyleCode (parse text with stylecodes.codec.parse_code), got {describe(self.code)}."
            )
        object.__setattr__(self, "strength", check_number("strength", self.strength, *STRENGTH_RANGE))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": self.code.canonical, "strength": self.strength}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodeStyle:
        return cls(parse_code(_field(data, "code", str)), _field(data, "strength", float | int))

    def batch_part(self) -> Hashable | None:
        """What a batch must share with this style (None: any batch can take it; the control module is per row)."""
        return None


@dataclass(frozen=True)
class StyleImage:
    """A picture to take the style from, turned into `mode`'s own style when painting (a code for `stylecode`).

    The result's metadata records what the picture became, so that a repaint needs the code (or embedding), never
    the picture again.
    """

    kind: ClassVar[str] = "image"
    image: PIL.Image.Image
    target_mode: str = STYLECODE_MODE
    strength: float = DEFAULT_STRENGTH

    def __post_init__(self) -> None:
        if not isinstance(self.image, PIL.Image.Image):
            raise ValueError(f"`image` must be a PIL image (stylecodes.images.load_image), got {describe(self.image)}.")
        if not isinstance(self.target_mode, str) or not self.target_mode:
            raise ValueError(f"`target_mode` must be a style mode's name, got {describe(self.target_mode)}.")
        object.__setattr__(self, "strength", check_number("strength", self.strength, *STRENGTH_RANGE))

    @property
    def mode(self) -> str:
        return self.target_mode

    def to_json(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")  # lossless: the same picture gives the same style after the trip
        return {
            "kind": self.kind,
            "image": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "mode": self.target_mode,
            "strength": self.strength,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StyleImage:
        from stylecodes.images import load_image  # its decompression-bomb and format checks apply here too

        raw = base64.b64decode(_field(data, "image", str), validate=True)
        return cls(load_image(raw), _field(data, "mode", str), _field(data, "strength", float | int))

    def batch_part(self) -> Hashable | None:
        return None


@dataclass(frozen=True, eq=False)
class DEADiffStyle:
    """DEADiff's style of a picture: its style Q-Former's tokens, (16, 768) float16 for the released model, painted
    by the `deadiff` mode at `strength` (DEADiff's `img_weight`, default 1.0). float16 because that is what is stored
    and sent: a picture's tokens are rounded once, when they are made, so a repaint from them is exact."""

    kind: ClassVar[str] = "deadiff"
    mode: ClassVar[str] = DEADIFF_MODE
    tokens: np.ndarray
    strength: float = DEADIFF_DEFAULT_STRENGTH

    def __post_init__(self) -> None:
        tokens = self.tokens
        if not isinstance(tokens, np.ndarray) or tokens.ndim != 2:
            got = f"shape {tokens.shape}" if isinstance(tokens, np.ndarray) else describe(tokens)
            raise ValueError(f"`tokens` must be a (tokens, width) array, 16 x 768 for DEADiff, got {got}.")
        if not (0 < tokens.shape[0] <= _MAX_TOKENS and 0 < tokens.shape[1] <= _MAX_TOKEN_WIDTH):
            raise ValueError(f"`tokens` must be at most {_MAX_TOKENS} x {_MAX_TOKEN_WIDTH}, got {tokens.shape}.")
        with np.errstate(over="ignore"):  # (values beyond float16's range become inf, refused just below)
            tokens = tokens.astype(np.float16)  # a copy: the caller's array can change without changing the style
        if not np.isfinite(tokens).all():
            raise ValueError("`tokens` must be finite values within float16's range.")
        tokens.flags.writeable = False
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "strength", check_number("strength", self.strength, *STRENGTH_RANGE))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DEADiffStyle):
            return NotImplemented
        return self.strength == other.strength and np.array_equal(self.tokens, other.tokens)

    def __hash__(self) -> int:
        return hash((self.tokens.tobytes(), self.strength))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokens": base64.b64encode(self.tokens.astype("<f2").tobytes()).decode("ascii"),
            "shape": list(self.tokens.shape),
            "strength": self.strength,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DEADiffStyle:
        shape = _field(data, "shape", list)
        if len(shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise ValueError(f"The style's `shape` must be two positive integers, got {describe(shape)}.")
        raw = base64.b64decode(_field(data, "tokens", str), validate=True)
        if len(raw) != 2 * shape[0] * shape[1]:
            raise ValueError(f"The style's `tokens` hold {len(raw)} bytes; a {shape[0]}x{shape[1]} float16 array has "
                             f"{2 * shape[0] * shape[1]}.")
        tokens = np.frombuffer(raw, dtype="<f2").reshape(shape)
        return cls(tokens, _field(data, "strength", float | int))

    def batch_part(self) -> Hashable | None:
        return None  # per row: any batch can take it


_MAX_TOKENS, _MAX_TOKEN_WIDTH = 64, 4096  # well above DEADiff's 16 x 768; bounds what a job's JSON may carry

# Every style type, by its JSON `kind`. A new mode's style type is added here.
STYLE_TYPES: dict[str, type[Any]] = {cls.kind: cls for cls in (CodeStyle, StyleImage, DEADiffStyle)}
Style = Union[CodeStyle, StyleImage, DEADiffStyle]  # noqa: UP007 (a runtime alias for isinstance-free annotations)


def check_styles(styles: Any) -> tuple[Any, ...]:
    """A request's styles as a tuple, each a known style type, at most one per mode; ValueError names the problem."""
    if styles is None:
        return ()
    if not isinstance(styles, list | tuple):
        raise ValueError(f"`styles` must be a tuple of styles (e.g. CodeStyle(code)), got {describe(styles)}.")
    known = tuple(STYLE_TYPES.values())
    modes: set[str] = set()
    for style in styles:
        if not isinstance(style, known):
            names = ", ".join(cls.__name__ for cls in known)
            raise ValueError(f"Each of `styles` must be one of {names}, got {describe(style)}.")
        if style.mode in modes:
            raise ValueError(
                f"`styles` has two styles for the {style.mode} mode; a picture takes at most one style per mode "
                "(mix codes into one first, e.g. with stylecodes.codec.mix)."
            )
        modes.add(style.mode)
    return tuple(styles)


def style_from_json(data: Any) -> Any:
    """The style a `to_json()` dict describes; CodeError/ValueError says what is wrong with it."""
    if not isinstance(data, Mapping) or not isinstance(data.get("kind"), str):
        raise ValueError(f"A style must be an object with a `kind`, got {describe(data)}.")
    style_type = STYLE_TYPES.get(data["kind"])
    if style_type is None:
        raise ValueError(f"Unknown style kind {data['kind']!r}; known kinds are {', '.join(sorted(STYLE_TYPES))}.")
    return style_type.from_json(data)


def _field(data: Mapping[str, Any], name: str, expected: Any) -> Any:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, expected):
        raise ValueError(f"The style's `{name}` is missing or of the wrong type: {describe(value)}.")
    return value


__all__ = [
    "DEADIFF_DEFAULT_STRENGTH",
    "DEADIFF_MODE",
    "STYLECODE_MODE",
    "STYLE_TYPES",
    "CodeError",
    "CodeStyle",
    "DEADiffStyle",
    "Style",
    "StyleImage",
    "check_styles",
]
