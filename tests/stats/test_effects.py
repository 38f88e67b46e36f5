"""Welch, conversion and relative effects against scipy and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import test_proportions_2indep as wald_two_proportions

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.sufficient import ArmStats

RNG = np.random.default_rng(20261127)


def batch_of(control: ArmStats, variant: ArmStats, **flags: np.ndarray) -> ComparisonBatch:
    size = len(control)
    return ComparisonBatch(
        control=control,
        variant=variant,
        is_ratio=flags.get("is_ratio", np.zeros(size, bool)),
        use_cuped=flags.get("use_cuped", np.zeros(size, bool)),
        group=flags.get("group", np.arange(size)),
    )


def test_welch_equals_scipy_from_stats_over_random_inputs() -> None:
    size = 500
    n_c = RNG.integers(2, 5000, size).astype(float)
    n_t = RNG.integers(2, 5000, size).astype(float)
    mean_c, mean_t = RNG.normal(10, 3, size), RNG.normal(10, 3, size)
    sd_c, sd_t = RNG.uniform(0.1, 20, size), RNG.uniform(0.1, 20, size)
    control = ArmStats.of(n_c, mean_c * n_c, (n_c - 1) * sd_c**2 + n_c * mean_c**2)
    variant = ArmStats.of(n_t, mean_t * n_t, (n_t - 1) * sd_t**2 + n_t * mean_t**2)
    result = analyze(batch_of(control, variant), AnalysisOptions(correction="none"))
    oracle = sps.ttest_ind_from_stats(mean_t, sd_t, n_t, mean_c, sd_c, n_c, equal_var=False)
    np.testing.assert_allclose(result.abs_p_value, oracle.pvalue, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.abs_effect, mean_t - mean_c, rtol=1e-9, atol=1e-9)
    se = np.sqrt(sd_t**2 / n_t + sd_c**2 / n_c)
    t_crit = (result.abs_ci_high - result.abs_effect) / se
    df = (sd_c**2 / n_c + sd_t**2 / n_t) ** 2 / (
        (sd_c**2 / n_c) ** 2 / (n_c - 1) + (sd_t**2 / n_t) ** 2 / (n_t - 1)
    )
    np.testing.assert_allclose(t_crit, sps.t.ppf(0.975, df), rtol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_welch_equals_scipy_on_raw_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_c = rng.lognormal(1.0, 1.0, rng.integers(20, 3000))
    y_t = rng.lognormal(1.1, 1.2, rng.integers(20, 3000))
    result = analyze(
        batch_of(ArmStats.from_values(y_c), ArmStats.from_values(y_t)),
        AnalysisOptions(correction="none"),
    )
    oracle = sps.ttest_ind(y_t, y_c, equal_var=False)
    ci = oracle.confidence_interval(0.95)
    np.testing.assert_allclose(result.abs_p_value[0], oracle.pvalue, rtol=1e-9)
    np.testing.assert_allclose(
        [result.abs_ci_low[0], result.abs_ci_high[0]], [ci.low, ci.high], rtol=1e-9
    )


def test_conversion_agrees_with_statsmodels_wald_test() -> None:
    for rate_c, rate_t, n in [(0.05, 0.055, 40_000), (0.3, 0.29, 5_000), (0.5, 0.52, 2_000)]:
        conv_c = int(rate_c * n)
        conv_t = int(rate_t * n)
        # 0/1 user values: Σy = Σy² = conversions
        result = analyze(
            batch_of(ArmStats.of(n, conv_c, conv_c), ArmStats.of(n, conv_t, conv_t)),
            AnalysisOptions(correction="none"),
        )
        wald = wald_two_proportions(conv_t, n, conv_c, n, method="wald", compare="diff")
        # Ours uses the n−1 variance and a t with ~2n df, Wald the n variance and a normal:
        # rescaling Wald's statistic by √((n−1)/n) leaves only the t-vs-normal tail difference.
        z_rescaled = wald.statistic * np.sqrt((n - 1) / n)
        assert result.abs_p_value[0] == pytest.approx(2 * sps.norm.sf(abs(z_rescaled)), rel=2e-3)
        assert result.abs_p_value[0] >= wald.pvalue
        assert result.abs_effect[0] == pytest.approx(conv_t / n - conv_c / n, rel=1e-12)


def test_relative_effect_delta_method_matches_hand_formula_and_growthbook_convention() -> None:
    n_c, n_t, mean_c, mean_t, var_c, var_t = 1000.0, 1200.0, 4.0, 4.4, 9.0, 10.0
    control = ArmStats.of(n_c, mean_c * n_c, (n_c - 1) * var_c + n_c * mean_c**2)
    variant = ArmStats.of(n_t, mean_t * n_t, (n_t - 1) * var_t + n_t * mean_t**2)
    result = analyze(batch_of(control, variant), AnalysisOptions(correction="none"))
    v_r = var_t / (n_t * mean_c**2) + mean_t**2 * var_c / (n_c * mean_c**4)
    df = (var_c / n_c + var_t / n_t) ** 2 / (
        (var_c / n_c) ** 2 / (n_c - 1) + (var_t / n_t) ** 2 / (n_t - 1)
    )
    half = sps.t.ppf(0.975, df) * np.sqrt(v_r)
    assert result.rel_effect[0] == pytest.approx(0.1, rel=1e-12)
    assert result.rel_ci_low[0] == pytest.approx(0.1 - half, rel=1e-10)
    assert result.rel_ci_high[0] == pytest.approx(0.1 + half, rel=1e-10)


def test_degenerate_cases_give_null_with_reason_never_crash() -> None:
    control = ArmStats.of([100, 1, 50, 50], [500, 1, 0, 0], [2500, 1, 0, 0])
    variant = ArmStats.of([100, 10, 50, 50], [500, 5, 10, 0], [2500, 5, 10, 0])
    result = analyze(batch_of(control, variant), AnalysisOptions(correction="none"))
    # 0: both arms constant and equal: exact, p = 1
    assert result.p_value[0] == result.abs_p_value[0] == 1.0 and result.abs_effect[0] == 0.0
    assert any("zero_variance" in r for r in result.reasons[0])
    # 1: n < 2
    assert np.isnan(result.p_value[1]) and any("n_below_2" in r for r in result.reasons[1])
    # 2: control mean 0: relative undefined (so is the decision p-value), absolute still there
    assert np.isnan(result.rel_effect[2]) and np.isnan(result.p_value[2])
    assert not np.isnan(result.abs_p_value[2]) and not result.significant[2]
    assert any("control_mean_zero" in r for r in result.reasons[2])
    assert np.isnan(result.sequential_p_value[2]) and np.isnan(result.chance_to_win[2])
    # 3: all zeros in both arms: no difference (absolute p = 1), no relative effect to test
    assert result.abs_p_value[3] == 1.0 and np.isnan(result.p_value[3])
