"""What a user asked for, as the commands, the buttons and the actions pass it on."""

from __future__ import annotations

from dataclasses import dataclass

from stylecodes.codec import StyleCode


@dataclass(frozen=True)
class ImagineOptions:
    """What the user asked /imagine for; None = the guild's default."""

    prompt: str
    code: str | None = None
    strength: float | None = None
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float = 3.0
    count: int = 1


@dataclass(frozen=True)
class ResolvedStyle:
    code: StyleCode
    label: str  # "name@rev", the mix as typed, or the canonical code
    revision_id: int | None = None  # a single named revision: usage history counts it for that style
    style_id: int | None = None
