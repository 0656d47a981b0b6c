"""Stylecode text format: parsing, formatting, quantisation, mixing and random codes.

A stylecode is the 20-dim style latent quantised to 6 bits per value. Two spellings carry exactly the
same information:

- canonical (the paper's): 20 URL-safe base64 symbols, one per 6-bit level, then one decimal digit
  naming the encoder version, e.g. ``C_d_AAI_rQglIvUb1_fC1`` (21 characters);
- legacy (what the published tool prints): the 20 levels stored one per byte, standard base64 with
  the padding stripped, e.g. ``Aj8dPwAACD8rECAlCC8UGzU/HwI`` (27 characters). Legacy codes only ever
  came from the version-1 encoder.

Pure Python and numpy, so the registry and the bot can validate codes without importing torch.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import numpy as np

from stylecodes.versions import VERSIONS

LATENT_DIM = 20  # values in the style latent, fixed by the published autoencoder
LEVELS = 64  # 6 bits per value
MAX_LEVEL = LEVELS - 1
CANONICAL_LENGTH = LATENT_DIM + 1  # 20 symbols + version digit
LEGACY_LENGTH = 27  # base64 of 20 bytes without padding
LEGACY_VERSION = 1  # the published tool only ever had the version-1 encoder

URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SYMBOL_TO_LEVEL = {symbol: level for level, symbol in enumerate(URLSAFE_ALPHABET)}
# The standard base64 alphabet differs only in its last two symbols; accept them as their URL-safe twins.
_SYMBOL_TO_LEVEL.update({"+": 62, "/": 63})

EXAMPLE_CODE = "C_d_AAI_rQglIvUb1_fC1"
_FORMAT_HINT = (
    f"A stylecode is {LATENT_DIM} base64 symbols (A-Z a-z 0-9 - _) followed by one version digit, "
    f"e.g. `{EXAMPLE_CODE}`; the published tool's {LEGACY_LENGTH}-character codes are accepted too."
)
_MIX_TERM = re.compile(r"^(?P<code>.+?)(?:::(?P<weight>[^:]*))?$")


class CodeError(ValueError):
    """A stylecode (or a mix of them) could not be parsed. The message is safe to show to users."""

    def __init__(self, problem: str, *, hint: bool = True) -> None:
        self.problem = problem
        super().__init__(f"{problem} {_FORMAT_HINT}" if hint else problem)


@dataclass(frozen=True, slots=True)
class StyleCode:
    """One quantised style: 20 levels in 0..63 and the encoder version that produced them."""

    levels: tuple[int, ...]
    version: int

    def __post_init__(self) -> None:
        # Checked here, not only in parse_code, so that no StyleCode exists that would print as an unparsable code.
        if not isinstance(self.levels, tuple | list) or len(self.levels) != LATENT_DIM:
            got = f"{len(self.levels)}" if isinstance(self.levels, tuple | list) else type(self.levels).__name__
            raise CodeError(f"A stylecode has a tuple of {LATENT_DIM} levels, got {got}.", hint=False)
        bad = [level for level in self.levels if not _is_int(level) or not 0 <= level <= MAX_LEVEL]
        if bad:
            raise CodeError(f"Stylecode levels must be integers in 0..{MAX_LEVEL}, got {bad[0]!r}.", hint=False)
        if not _is_int(self.version) or self.version not in VERSIONS:
            known = ", ".join(str(v) for v in VERSIONS)
            raise CodeError(f"Unknown encoder version {self.version!r}; known versions are {known}.", hint=False)
        # numpy integers become ints (and a list a tuple), so equal codes compare and hash equal
        object.__setattr__(self, "levels", tuple(int(level) for level in self.levels))
        object.__setattr__(self, "version", int(self.version))

    @property
    def canonical(self) -> str:
        return "".join(URLSAFE_ALPHABET[level] for level in self.levels) + str(self.version)

    @property
    def legacy(self) -> str:
        """The published tool's spelling. Only version-1 codes have one."""
        if self.version != LEGACY_VERSION:
            raise CodeError(
                f"Only version-{LEGACY_VERSION} codes have a legacy form; this one is version {self.version}.",
                hint=False,
            )
        return base64.b64encode(bytes(self.levels)).decode("ascii").rstrip("=")

    def latent(self) -> np.ndarray:
        """The dequantised latent, (20,) float32, exactly as the published decoder computes it."""
        return dequantize(self.levels)

    def __str__(self) -> str:
        return self.canonical


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def quantize(latent: np.ndarray | list[float]) -> tuple[int, ...]:
    """``q = floor(clip((x + 1) * 63 / 2, 0, 63))``, in float32 like the published implementation."""
    x = np.asarray(latent, dtype=np.float32)
    if x.shape != (LATENT_DIM,):
        raise ValueError(f"`latent` must have shape ({LATENT_DIM},), got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("`latent` contains NaN or infinite values.")
    scaled = (x + np.float32(1)) * np.float32(MAX_LEVEL) / np.float32(2)
    return tuple(int(q) for q in np.floor(np.clip(scaled, 0, MAX_LEVEL)))


def dequantize(levels: tuple[int, ...] | list[int] | np.ndarray) -> np.ndarray:
    """``x = q * 2 / 63 - 1``, in float32 like the published implementation."""
    q = np.asarray(levels, dtype=np.float32)
    return q * np.float32(2) / np.float32(MAX_LEVEL) - np.float32(1)


def code_from_latent(latent: np.ndarray | list[float], version: int) -> StyleCode:
    return StyleCode(quantize(latent), version)


def parse_code(text: str) -> StyleCode:
    """Parse a canonical or legacy stylecode. Raises `CodeError` saying exactly what is wrong."""
    if not isinstance(text, str):
        raise CodeError(f"A stylecode must be text, got {type(text).__name__}.")
    code = text.strip().strip("`")
    if not code:
        raise CodeError("The stylecode is empty.")
    if len(code) == LEGACY_LENGTH:
        return _parse_legacy(code)
    if len(code) != CANONICAL_LENGTH:
        raise CodeError(
            f"A stylecode is {CANONICAL_LENGTH} characters long (or {LEGACY_LENGTH} for a legacy code), "
            f"but `{_clip(code)}` has {len(code)}."
        )
    levels = []
    for position, symbol in enumerate(code[:LATENT_DIM], start=1):
        level = _SYMBOL_TO_LEVEL.get(symbol)
        if level is None:
            raise CodeError(f"Character {position} of the stylecode, `{symbol}`, is not a base64 symbol.")
        levels.append(level)
    version_digit = code[LATENT_DIM]
    if not ("0" <= version_digit <= "9"):
        raise CodeError(f"The last character of a stylecode is the encoder version digit (0-9), got `{version_digit}`.")
    version = int(version_digit)
    if version not in VERSIONS:
        known = ", ".join(str(v) for v in VERSIONS)
        raise CodeError(f"The stylecode ends in `{version}`, an unknown encoder version; known versions are {known}.")
    return StyleCode(tuple(levels), version)


def _parse_legacy(code: str) -> StyleCode:
    for position, symbol in enumerate(code, start=1):
        if symbol not in _SYMBOL_TO_LEVEL:
            raise CodeError(f"Character {position} of the legacy stylecode, `{symbol}`, is not a base64 symbol.")
    try:
        raw = base64.b64decode(code.replace("-", "+").replace("_", "/") + "=", validate=True)
    except binascii.Error as exc:  # pragma: no cover - every 27-symbol string decodes; kept for safety
        raise CodeError(f"The legacy stylecode is not valid base64 ({exc}).") from exc
    if base64.b64encode(raw).decode("ascii").rstrip("=") != code.replace("-", "+").replace("_", "/"):
        raise CodeError(
            "The legacy stylecode's last character has bits set beyond the 20 encoded bytes; "
            "it was not produced by the StyleCodes tool."
        )
    for position, value in enumerate(raw, start=1):
        if value > MAX_LEVEL:
            raise CodeError(
                f"Value {position} of the legacy stylecode is {value}, outside the 6-bit range 0..{MAX_LEVEL}; "
                "it was not produced by the StyleCodes tool."
            )
    return StyleCode(tuple(raw), LEGACY_VERSION)


def parse_mix(text: str) -> list[tuple[StyleCode, float]]:
    """Parse ``"CODE_A::2 CODE_B::1"`` into (code, weight) terms. A term without ``::w`` weighs 1."""
    terms = text.split() if isinstance(text, str) else []
    if not terms:
        raise CodeError("The mix is empty; write codes separated by spaces, each optionally `::weight`.")
    parsed = []
    for term in terms:
        match = _MIX_TERM.match(term)
        assert match is not None  # the pattern matches any non-empty term
        weight_text = match.group("weight")
        weight = 1.0 if weight_text is None else _parse_weight(weight_text, term)
        parsed.append((parse_code(match.group("code")), weight))
    return parsed


def _parse_weight(weight_text: str, term: str) -> float:
    try:
        weight = float(weight_text)
    except ValueError:
        raise CodeError(f"The weight in `{_clip(term)}` must be a number, like `::2` or `::0.5`.", hint=False) from None
    if not np.isfinite(weight) or weight <= 0:
        raise CodeError(f"The weight in `{_clip(term)}` must be a positive number.", hint=False)
    return weight


def mix_codes(terms: list[tuple[StyleCode, float]]) -> StyleCode:
    """Weighted mean of the decoded latents, re-quantised. All codes must share one encoder version."""
    if not terms:
        raise CodeError("Nothing to mix.", hint=False)
    versions = sorted({code.version for code, _ in terms})
    if len(versions) > 1:
        raise CodeError(
            f"Only codes of the same encoder version can be mixed, got versions {', '.join(map(str, versions))}.",
            hint=False,
        )
    weights = np.asarray([weight for _, weight in terms], dtype=np.float64)
    latents = np.stack([code.latent() for code, _ in terms]).astype(np.float64)  # (N, 20)
    mixed = (latents * weights[:, None]).sum(axis=0) / weights.sum()
    # Re-quantise to the *nearest* level, not with the encoder's floor: in float32 the published
    # floor maps the dequantised levels 1..15 one level down, so mixing a code with itself would drift.
    levels = np.clip(np.rint((mixed + 1) * MAX_LEVEL / 2), 0, MAX_LEVEL)
    return StyleCode(tuple(int(level) for level in levels), versions[0])


def mix(text: str) -> StyleCode:
    return mix_codes(parse_mix(text))


def random_code(version: int, rng: np.random.Generator | None = None) -> StyleCode:
    """A uniformly random code for `version` (a known version, else CodeError): every level equally likely."""
    rng = rng if rng is not None else np.random.default_rng()
    return StyleCode(tuple(int(v) for v in rng.integers(0, LEVELS, size=LATENT_DIM)), version)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
