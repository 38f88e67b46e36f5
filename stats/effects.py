"""Absolute (Welch) and relative (delta method) effects between two arms, vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from stats.sufficient import FloatArray


@dataclass(frozen=True)
class Effect:
    estimate: FloatArray
    variance: FloatArray  # of the estimate
    df: FloatArray
    p_value: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray


def welch_df(var_c: FloatArray, n_c: FloatArray, var_t: FloatArray, n_t: FloatArray) -> FloatArray:
    """Welch–Satterthwaite degrees of freedom (inf when both arms have zero variance)."""
    a = var_c / n_c
    b = var_t / n_t
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (a + b) ** 2 / (a**2 / (n_c - 1) + b**2 / (n_t - 1))
    return np.where((a + b) == 0, np.inf, df)


def t_interval(estimate: FloatArray, variance: FloatArray, df: FloatArray, alpha: float) -> Effect:
    """Two-sided t-test of ``estimate = 0`` with its ``1 − alpha`` interval.

    A zero-variance estimate is exact: p is 1 when it is 0 and 0 otherwise."""
    se = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stat = estimate / se
    p_value = 2 * sps.t.sf(np.abs(t_stat), df)
    p_value = np.where(se == 0, np.where(estimate == 0, 1.0, 0.0), p_value)
    half_width = sps.t.ppf(1 - alpha / 2, df) * se
    half_width = np.where(se == 0, 0.0, half_width)
    return Effect(estimate, variance, df, p_value, estimate - half_width, estimate + half_width)


def welch(
    mean_c: FloatArray,
    var_c: FloatArray,
    n_c: FloatArray,
    mean_t: FloatArray,
    var_t: FloatArray,
    n_t: FloatArray,
    alpha: float,
) -> Effect:
    """Welch's unequal-variance t-test on ``mean_t − mean_c``.

    Source: Welch 1947; equals ``scipy.stats.ttest_ind_from_stats(equal_var=False)``."""
    variance = var_c / n_c + var_t / n_t
    return t_interval(mean_t - mean_c, variance, welch_df(var_c, n_c, var_t, n_t), alpha)


def relative(
    mean_c: FloatArray,
    var_c: FloatArray,
    n_c: FloatArray,
    mean_t: FloatArray,
    var_t: FloatArray,
    n_t: FloatArray,
    alpha: float,
) -> Effect:
    """``r = mean_t/mean_c − 1`` with delta-method variance and the Welch df; NaN where
    ``mean_c = 0`` (undefined).

    Source: GrowthBook gbstats ``frequentist_variance`` (relative), Deng et al. 2018."""
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = mean_t / mean_c - 1
        variance = var_t / (n_t * mean_c**2) + mean_t**2 * var_c / (n_c * mean_c**4)
    undefined = mean_c == 0
    estimate = np.where(undefined, np.nan, estimate)
    variance = np.where(undefined, np.nan, variance)
    return t_interval(estimate, variance, welch_df(var_c, n_c, var_t, n_t), alpha)
