"""SRM against scipy.chisquare, corrections against statsmodels, power against statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from stats.corrections import adjust_p_values
from stats.power import minimum_detectable_effect, sample_size_per_arm
from stats.srm import srm_p_values


def test_srm_equals_scipy_chisquare_with_ragged_arm_counts() -> None:
    rng = np.random.default_rng(3)
    experiments = []
    for _ in range(60):
        arms = int(rng.integers(2, 5))
        shares = rng.dirichlet(np.ones(arms) * 5)
        counts = rng.multinomial(int(rng.integers(100, 100_000)), shares).astype(float)
        experiments.append((counts, shares))
    observed = np.full((60, 4), np.nan)
    expected = np.full((60, 4), np.nan)
    for row, (counts, shares) in enumerate(experiments):
        observed[row, : counts.size] = counts
        expected[row, : shares.size] = shares
    ours = srm_p_values(observed, expected)
    for row, (counts, shares) in enumerate(experiments):
        oracle = sps.chisquare(counts, shares * counts.sum()).pvalue
        assert ours[row] == pytest.approx(oracle, rel=1e-9, abs=1e-300)


def test_srm_flags_a_real_mismatch() -> None:
    p = srm_p_values(np.array([[10_000.0, 10_500.0]]), np.array([[0.5, 0.5]]))
    assert p[0] < 0.001


@pytest.mark.parametrize(("ours", "theirs"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_corrections_equal_statsmodels_per_experiment(ours: str, theirs: str) -> None:
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 12, 40)
    groups = np.repeat(np.arange(40), sizes)
    rng.shuffle(groups)
    p = np.where(
        rng.random(groups.size) < 0.3, rng.random(groups.size) * 0.01, rng.random(groups.size)
    )
    p[[3, 17]] = np.nan  # a comparison with no p-value stays out of the family
    adjusted = adjust_p_values(p, groups, ours)  # type: ignore[arg-type]
    for group in range(40):
        members = np.flatnonzero((groups == group) & ~np.isnan(p))
        if members.size == 0:
            continue
        expected = multipletests(p[members], method=theirs)[1]
        np.testing.assert_allclose(adjusted[members], expected, rtol=1e-12)
    assert np.isnan(adjusted[[3, 17]]).all()


def test_sample_size_and_mde_match_statsmodels_normal_power() -> None:
    sigma, delta = 4.0, 0.5
    n = sample_size_per_arm(delta, sigma**2, sigma**2, alpha=0.05, power=0.8)[0]
    oracle = NormalIndPower().solve_power(
        effect_size=delta / sigma, alpha=0.05, power=0.8, ratio=1.0
    )
    assert n == np.ceil(oracle)
    mde = minimum_detectable_effect(oracle, sigma**2, sigma**2)[0]
    assert mde == pytest.approx(delta, rel=1e-5)  # statsmodels solves numerically
