"""Bayesian read-out on the relative effect (GrowthBook gbstats ``EffectBayesianABTest``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from stats.sufficient import FloatArray


@dataclass(frozen=True)
class NormalPrior:
    mean: float = 0.0
    variance: float = 0.3**2


def posterior(
    estimate: FloatArray, variance: FloatArray, prior: NormalPrior | None = None
) -> tuple[FloatArray, FloatArray]:
    """Posterior mean and variance of ``r``: ``N(r, V)`` under a flat prior, else the
    precision-weighted combination with a normal prior."""
    if prior is None:
        return estimate, variance
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = 1 / variance + 1 / prior.variance
        mean = (estimate / variance + prior.mean / prior.variance) / precision
    return mean, 1 / precision


def chance_to_win(mean: FloatArray, variance: FloatArray) -> FloatArray:
    """``P(r > 0) = Φ(r/√V)`` for a metric where higher is better."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = mean / np.sqrt(variance)
    return np.asarray(sps.norm.cdf(z), dtype=np.float64)


def expected_loss(mean: FloatArray, variance: FloatArray) -> FloatArray:
    """``E[max(0, −r)] = √V·φ(r/√V) − r·Φ(−r/√V)``: the loss of shipping the variant."""
    sd = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = mean / sd
    loss = sd * sps.norm.pdf(z) - mean * sps.norm.cdf(-z)
    return np.where(sd == 0, np.maximum(-mean, 0.0), loss)
