"""Always-valid inference with the mixture SPRT (Johari, Koomen, Pekelis, Walsh 2017/2022)."""

from __future__ import annotations

import numpy as np

from stats.sufficient import FloatArray


def msprt_p_value(
    estimate: FloatArray,
    variance: FloatArray,
    tau: float,
    previous_p: FloatArray | None = None,
) -> FloatArray:
    """``min(1, 1/Λ)`` with ``Λ = √(V/(V+τ²))·exp(τ²r²/(2V(V+τ²)))`` for a normal mixture
    ``N(0, τ²)``, then the running minimum with ``previous_p`` (NaN: no earlier look)."""
    tau_sq = tau**2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lambda = 0.5 * np.log(variance / (variance + tau_sq)) + tau_sq * estimate**2 / (
            2 * variance * (variance + tau_sq)
        )
        p_value = np.minimum(1.0, np.exp(-log_lambda))
    # Zero variance: the estimate is exact, so any non-zero effect is certain.
    p_value = np.where(variance == 0, np.where(estimate == 0, 1.0, 0.0), p_value)
    if previous_p is not None:
        p_value = np.fmin(p_value, previous_p)
    return p_value


def msprt_interval(
    estimate: FloatArray, variance: FloatArray, tau: float, alpha: float
) -> tuple[FloatArray, FloatArray]:
    """Always-valid ``1 − alpha`` interval
    ``r ± √(V(V+τ²)/τ² · (ln((V+τ²)/V) − 2 ln α))`` (Johari et al., eq. for normal mixtures)."""
    tau_sq = tau**2
    with np.errstate(divide="ignore", invalid="ignore"):
        half_width = np.sqrt(
            variance
            * (variance + tau_sq)
            / tau_sq
            * (np.log((variance + tau_sq) / variance) - 2 * np.log(alpha))
        )
    half_width = np.where(variance == 0, 0.0, half_width)
    return estimate - half_width, estimate + half_width
