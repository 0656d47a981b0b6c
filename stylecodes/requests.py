"""What one picture to paint is, as plain data: `GenerationRequest`, checked when made, with its JSON form.

Torch-free (numpy and PIL only), so the bot builds requests, jobs carry them as JSON and restarts rebuild them
without loading a model.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from stylecodes.checks import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    GUIDANCE_RANGE,
    MAX_SEED,
    MAX_STEPS,
    check_int,
    check_number,
    check_size,
    describe,
)
from stylecodes.styles import STYLECODE_MODE, CodeStyle, check_styles, style_from_json


@dataclass(frozen=True)
class GenerationRequest:
    """One image to paint. Checked when created: a bad field raises ValueError naming it, before any queueing.

    `styles` holds at most one style per mode, e.g. `(CodeStyle(code, 0.9),)`; empty means plain SD1.5.
    """

    prompt: str
    seed: int
    negative_prompt: str = ""
    styles: tuple[Any, ...] = ()
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    width: int = 512
    height: int = 512

    def __post_init__(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"`{name}` must be a string, got {type(getattr(self, name)).__name__}.")
        checked = {
            "styles": check_styles(self.styles),
            "seed": check_int("seed", self.seed, 0, MAX_SEED),
            "steps": check_int("steps", self.steps, 1, MAX_STEPS),
            "guidance_scale": check_number("guidance_scale", self.guidance_scale, *GUIDANCE_RANGE),
            "width": check_size("width", self.width),
            "height": check_size("height", self.height),
        }
        for name, value in checked.items():  # numpy scalars become Python numbers, so requests serialise as JSON
            object.__setattr__(self, name, value)

    @property
    def code_style(self) -> CodeStyle | None:
        """The request's stylecode, if it has one."""
        return next((style for style in self.styles if isinstance(style, CodeStyle)), None)

    @property
    def modes(self) -> tuple[str, ...]:
        """The style modes this request needs, e.g. ("stylecode",)."""
        return tuple(style.mode for style in self.styles)

    def style_of(self, mode: str) -> Any | None:
        return next((style for style in self.styles if style.mode == mode), None)

    def batch_key(self) -> tuple[Hashable, ...]:
        """Requests with equal keys can be painted in one batch (same settings; same adapters where a mode needs)."""
        parts = tuple(sorted((style.mode, part) for style in self.styles if (part := style.batch_part()) is not None))
        return (self.steps, self.guidance_scale, self.width, self.height, parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "negative_prompt": self.negative_prompt,
            "styles": [style.to_json() for style in self.styles],
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """The request `to_json()` wrote; ValueError (or CodeError) says what is wrong with it."""
        if not isinstance(data, Mapping):
            raise ValueError(f"A request must be an object, got {describe(data)}.")
        fields = dict(data)
        styles = fields.pop("styles", [])
        if not isinstance(styles, list):
            raise ValueError(f"A request's `styles` must be a list, got {describe(styles)}.")
        try:
            return cls(**fields, styles=tuple(style_from_json(style) for style in styles))
        except TypeError as exc:  # unknown or missing fields
            raise ValueError(f"Not a generation request: {exc}.") from None


__all__ = ["STYLECODE_MODE", "GenerationRequest"]
