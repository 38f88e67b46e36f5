"""Fixed-horizon sample size and minimum detectable effect for a two-sided test."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from stats.sufficient import FloatArray, as_array


def sample_size_per_arm(
    effect: float | FloatArray,
    var_c: float | FloatArray,
    var_t: float | FloatArray,
    alpha: float = 0.05,
    power: float = 0.8,
) -> FloatArray:
    """``n = (z(1−α/2) + z(1−β))²·(σ_c² + σ_t²)/δ²`` users per arm, rounded up
    (normal approximation; e.g. Chow, Shao & Wang, "Sample Size Calculations", §3.2)."""
    z_sum = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = z_sum**2 * (as_array(var_c) + as_array(var_t)) / as_array(effect) ** 2
    return np.ceil(n)


def minimum_detectable_effect(
    n_per_arm: float | FloatArray,
    var_c: float | FloatArray,
    var_t: float | FloatArray,
    alpha: float = 0.05,
    power: float = 0.8,
) -> FloatArray:
    """The absolute effect detectable with the given power: the inverse of the sample size."""
    z_sum = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return np.asarray(
        z_sum * np.sqrt((as_array(var_c) + as_array(var_t)) / as_array(n_per_arm)),
        dtype=np.float64,
    )
