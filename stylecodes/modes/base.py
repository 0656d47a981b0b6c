"""The style-mode seam: the one interface through which every way of styling a picture joins the pipeline.

A mode is built with what it needs loaded (the control module, an IP-Adapter, a LoRA cache...) and attached to a
pipeline with `pipeline.add_mode(mode)`. In each call the pipeline hands every mode its samples' styles, one entry
per sample (None where a sample has no style of that mode), and the mode:

1. `resolve`s them, batched: turns what needs a model (a style image) into what a repaint needs (a code, an
   embedding), and checks everything before any denoising starts;
2. may `rewrite_prompt`s (trigger words of a personal style);
3. `prepare`s, once per generation, what every denoising step needs: a `StepConditioning`, or None when none of
   its samples is styled;
4. gives per-sample `metadata`, enough to paint the picture again, and `finish`es (e.g. deactivates adapters).

The denoising loop stays one loop: each step makes one UNet call with the merged conditioning of all the modes.
Modes that change the same part of the UNet name each other in `conflicts_with`; the pipeline refuses a request
that combines them, before any work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from stylecodes.models.control import PreparedStyle


@dataclass(frozen=True)
class StyleInput:
    """One sample's input for a mode: the style (a `stylecodes.styles` object, or what the mode accepts beyond
    them, e.g. a raw latent) and the strength to apply it with."""

    value: Any
    strength: float


@dataclass(frozen=True)
class BatchContext:
    """What a mode may need to know about the batch it prepares for."""

    latent_size: tuple[int, int]  # (h, w): the latents' rows and columns (pixels / 8)
    cfg: bool  # classifier-free guidance: the UNet batch is [all unconditional rows, all conditional rows]
    device: torch.device
    dtype: torch.dtype  # the UNet's


@dataclass
class StepConditioning:
    """A mode's contribution to every denoising step's UNet call (rows in UNet-batch order, CFG halves included).

    `added_cond_kwargs` and `cross_attention_kwargs` go to the UNet as diffusers defines them (an IP-Adapter's
    `image_embeds` and `ip_adapter_masks`, say). `control` is the control module's prepared style: when set, the
    step runs through `StyleCodesControlModel` instead of the plain UNet call, with the same kwargs.
    """

    added_cond_kwargs: dict[str, Any] = field(default_factory=dict)
    cross_attention_kwargs: dict[str, Any] = field(default_factory=dict)
    control: PreparedStyle | None = None

    def merge(self, other: StepConditioning) -> StepConditioning:
        """Both contributions in one; two modes may not set the same kwarg or both replace the UNet call."""
        for name in ("added_cond_kwargs", "cross_attention_kwargs"):
            shared = set(getattr(self, name)) & set(getattr(other, name))
            if shared:
                raise ValueError(f"Two style modes both set the UNet's {name} {sorted(shared)}; they cannot combine.")
        if self.control is not None and other.control is not None:
            raise ValueError("Two style modes both steer the UNet through a control module; they cannot combine.")
        return StepConditioning(
            added_cond_kwargs={**self.added_cond_kwargs, **other.added_cond_kwargs},
            cross_attention_kwargs={**self.cross_attention_kwargs, **other.cross_attention_kwargs},
            control=self.control if self.control is not None else other.control,
        )


class StyleMode(ABC):
    """One way to steer the frozen UNet with a style. Subclasses set `name` and implement `resolve` and `prepare`."""

    name: ClassVar[str]
    conflicts_with: ClassVar[frozenset[str]] = frozenset()  # modes that cannot share a picture with this one

    @abstractmethod
    def resolve(self, inputs: Sequence[StyleInput | None]) -> list[Any | None]:
        """Per sample: its input -> this mode's resolved style (None stays None). Raises ValueError naming the
        problem for a style this mode cannot take. Runs before any denoising."""

    def rewrite_prompt(self, prompt: str, resolved: Any | None) -> str:
        """The prompt the text encoder sees for a sample styled by this mode (default: unchanged)."""
        return prompt

    @abstractmethod
    def prepare(self, resolved: Sequence[Any | None], batch: BatchContext) -> StepConditioning | None:
        """Once per generation: the conditioning every step needs, or None when no sample is styled by this mode."""

    @abstractmethod
    def metadata(self, resolved: Any | None) -> dict[str, Any]:
        """What a sample's picture records about this mode's style (None: the sample has none), to paint it again."""

    def finish(self) -> None:  # noqa: B027 (optional hook: most modes keep no per-call state)
        """After the denoising loop, also when it failed: undo per-call state (e.g. active adapters)."""
