"""Learned priors for random codes: sample new styles from where real codes lie, not uniformly (torch-free).

Each trained model version ships `prior.json`, a Gaussian mixture fitted on the style latents of its training set's
style images (`stylecodes.training.prior`). `sample_codes(version, n, rng)` draws latents from it and quantises them
like any encoded image. Uniform codes (`codec.random_code`) mostly land where no real image's code lies; see
docs/training.md for the measured difference.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from stylecodes.codec import LATENT_DIM, StyleCode, code_from_latent, random_code
from stylecodes.versions import get_spec

PRIOR_FILE = "prior.json"
PRIOR_KIND = "gaussian-mixture"


class NoPriorError(ValueError):
    """The version ships no learned prior. The message says what to use instead."""


@functools.lru_cache(maxsize=16)
def _load(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("kind") != PRIOR_KIND:
        raise ValueError(f"{path} is not a {PRIOR_KIND} prior.")
    weights = np.asarray(data["weights"], dtype=np.float64)  # (K,)
    means = np.asarray(data["means"], dtype=np.float64)  # (K, 20)
    covariances = np.asarray(data["covariances"], dtype=np.float64)  # (K, 20, 20)
    if means.shape[1:] != (LATENT_DIM,) or covariances.shape[1:] != (LATENT_DIM, LATENT_DIM):
        raise ValueError(f"{path} holds a prior of the wrong size.")
    return weights / weights.sum(), means, np.linalg.cholesky(covariances)


def prior_path(version: int) -> Path | None:
    spec = get_spec(version)
    if spec.folder is None:
        return None
    path = Path(spec.folder) / PRIOR_FILE
    return path if path.is_file() else None


def has_prior(version: int) -> bool:
    return prior_path(version) is not None


def sample_latents(version: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 20) latents drawn from version `version`'s prior (NoPriorError when it has none)."""
    path = prior_path(version)
    if path is None:
        raise NoPriorError(
            f"Model version {version} ships no learned prior for random codes; use uniform random codes instead."
        )
    weights, means, cholesky = _load(str(path))
    components = rng.choice(len(weights), size=n, p=weights)  # (n,)
    noise = rng.standard_normal((n, LATENT_DIM))  # (n, 20)
    return means[components] + np.einsum("nij,nj->ni", cholesky[components], noise)


def sample_codes(
    version: int, n: int, rng: np.random.Generator | None = None, *, uniform: bool = False
) -> list[StyleCode]:
    """`n` random codes of `version`: from its learned prior, or uniform with `uniform=True`."""
    rng = rng if rng is not None else np.random.default_rng()
    if uniform:
        return [random_code(version, rng) for _ in range(n)]
    return [code_from_latent(latent.astype(np.float32), version) for latent in sample_latents(version, n, rng)]
