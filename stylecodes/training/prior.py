"""Fitting a version's prior for random codes (`stylecodes.prior`): a Gaussian mixture over real style latents.

The number of components is chosen by BIC among `COMPONENT_CHOICES` on the training latents; a held-out split
measures what the prior buys (`prior_report`): the distance from sampled codes to the nearest held-out real code,
for the prior and for uniform codes, next to the same distance between real codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stylecodes.codec import LATENT_DIM, dequantize, quantize
from stylecodes.prior import PRIOR_KIND

COMPONENT_CHOICES = (1, 2, 4, 8, 16)
COVARIANCE_FLOOR = 1e-4  # keeps every component's covariance invertible with few codes per component


def fit_prior(latents: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """(N, 20) real style latents -> prior.json's content (mixture with the best BIC)."""
    from sklearn.mixture import GaussianMixture

    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or latents.shape[1] != LATENT_DIM or len(latents) < 2:
        raise ValueError(f"`latents` must be (N >= 2, {LATENT_DIM}), got {latents.shape}.")
    best = None
    for components in COMPONENT_CHOICES:
        if components * 5 > len(latents):  # too few codes per component to fit it
            break
        model = GaussianMixture(components, covariance_type="full", reg_covar=COVARIANCE_FLOOR, random_state=seed)
        model.fit(latents)
        bic = model.bic(latents)
        if best is None or bic < best[0]:
            best = (bic, model)
    assert best is not None
    model = best[1]
    return {
        "kind": PRIOR_KIND,
        "fitted_on": len(latents),
        "components": int(model.n_components),
        "weights": model.weights_.tolist(),
        "means": model.means_.tolist(),
        "covariances": model.covariances_.tolist(),
    }


def nearest_distances(samples: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each sample, the Euclidean distance to its nearest reference (dequantised latent space)."""
    differences = samples[:, None, :] - references[None, :, :]  # (S, R, 20)
    return np.sqrt((differences**2).sum(-1)).min(axis=1)


def as_code_latents(latents: np.ndarray) -> np.ndarray:
    """Latents through the 6-bit code and back, as every code the model ever sees."""
    return np.stack([dequantize(quantize(latent.astype(np.float32))) for latent in latents])


def prior_report(prior: dict[str, Any], train: np.ndarray, held_out: np.ndarray, *, samples: int = 500,
                 seed: int = 0) -> dict[str, float]:
    """Mean distance to the nearest held-out real code: prior samples, uniform codes, and real training codes."""
    from stylecodes.codec import LEVELS

    rng = np.random.default_rng(seed)
    weights = np.asarray(prior["weights"])
    means, covariances = np.asarray(prior["means"]), np.asarray(prior["covariances"])
    components = rng.choice(len(weights), size=samples, p=weights / weights.sum())
    drawn = np.stack([rng.multivariate_normal(means[c], covariances[c]) for c in components])
    uniform = dequantize(rng.integers(0, LEVELS, size=(samples, LATENT_DIM)))
    reference = as_code_latents(held_out)
    real = as_code_latents(train[: min(samples, len(train))])
    return {
        "prior_to_held_out": float(nearest_distances(as_code_latents(drawn), reference).mean()),
        "uniform_to_held_out": float(nearest_distances(uniform, reference).mean()),
        "real_to_held_out": float(nearest_distances(real, reference).mean()),
    }
