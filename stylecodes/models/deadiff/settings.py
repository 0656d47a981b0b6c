"""The operator's opt-in to DEADiff, and where its converted weights are. Torch-free: the bot reads it to decide
whether to offer the mode, the engine to load it.

DEADiff's code is Apache-2.0, but its README limits the model to personal, research and non-commercial purposes, so
the mode is off until the operator accepts that with `STYLECODES_DEADIFF_ACCEPT_LICENSE=1`, and it needs
`STYLECODES_DEADIFF_CHECKPOINT`: the `.safetensors` file `stylecodes convert-deadiff` makes from `deadiff_v1.ckpt`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stylecodes.hub import ModelLoadError

ACCEPT_LICENSE_ENV = "STYLECODES_DEADIFF_ACCEPT_LICENSE"
CHECKPOINT_ENV = "STYLECODES_DEADIFF_CHECKPOINT"
LICENCE_SUMMARY = (
    "DEADiff (bytedance/DEADiff, weights qth/DEADiff) may only be used for personal, research and non-commercial "
    "purposes (its README; the code is Apache-2.0)"
)
_YES, _NO = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class DEADiffUnavailable(ModelLoadError):
    """The DEADiff mode is off or cannot load; the message names the setting and why."""


@dataclass(frozen=True)
class DEADiffSettings:
    licence_accepted: bool
    checkpoint: Path | None

    @property
    def enabled(self) -> bool:
        """Whether to offer the mode: the licence is accepted (a missing file is reported when loading)."""
        return self.licence_accepted

    def require_checkpoint(self) -> Path:
        """The converted weights' path, or `DEADiffUnavailable` saying which setting to change and why."""
        if not self.licence_accepted:
            raise DEADiffUnavailable(
                f"The DEADiff mode is off: {ACCEPT_LICENSE_ENV} is not set. {LICENCE_SUMMARY}; set "
                f"{ACCEPT_LICENSE_ENV}=1 to accept that and turn it on."
            )
        if self.checkpoint is None:
            raise DEADiffUnavailable(
                f"{CHECKPOINT_ENV} is not set: point it at the file made by "
                "`stylecodes convert-deadiff deadiff.safetensors` (from qth/DEADiff's deadiff_v1.ckpt)."
            )
        if not self.checkpoint.is_file():
            raise DEADiffUnavailable(
                f"{CHECKPOINT_ENV}={self.checkpoint} is not a file; make it with "
                f"`stylecodes convert-deadiff {self.checkpoint}`."
            )
        return self.checkpoint


def deadiff_settings(environ: Mapping[str, str] | None = None) -> DEADiffSettings:
    """The settings from the environment; a licence value that is neither yes nor no is refused, not guessed."""
    env = os.environ if environ is None else environ
    accepted = env.get(ACCEPT_LICENSE_ENV, "").strip().lower()
    if accepted not in _YES | _NO:
        raise DEADiffUnavailable(
            f"{ACCEPT_LICENSE_ENV}={env[ACCEPT_LICENSE_ENV]!r} is neither yes nor no; set it to 1 to accept DEADiff's "
            "licence (personal, research and non-commercial use only) or leave it unset."
        )
    checkpoint = env.get(CHECKPOINT_ENV, "").strip()
    return DEADiffSettings(accepted in _YES, Path(checkpoint).expanduser() if checkpoint else None)
