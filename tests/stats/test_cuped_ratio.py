"""CUPED against statsmodels OLS; ratio metrics' delta method by simulated coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.sufficient import ArmStats


def one(control: ArmStats, variant: ArmStats, cuped: bool = False, ratio: bool = False):  # type: ignore[no-untyped-def]
    batch = ComparisonBatch(control, variant, np.array([ratio]), np.array([cuped]), np.array([0]))
    return analyze(batch, AnalysisOptions(correction="none"))


@pytest.mark.parametrize("seed", range(4))
def test_cuped_effect_equals_ols_treatment_coefficient(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_c, n_t = rng.integers(300, 3000, 2)
    x_c, x_t = rng.gamma(2, 3, n_c), rng.gamma(2, 3, n_t)
    y_c = 1.5 * x_c + rng.normal(0, 4, n_c)
    y_t = 1.5 * x_t + 0.7 + rng.normal(0, 4, n_t)
    frame = pd.DataFrame(
        {
            "y": np.concatenate([y_c, y_t]),
            "x": np.concatenate([x_c, x_t]),
            "treatment": np.r_[np.zeros(n_c), np.ones(n_t)],
        }
    )
    ols = smf.ols("y ~ treatment + x", data=frame).fit()
    result = one(ArmStats.from_values(y_c, x_c), ArmStats.from_values(y_t, x_t), cuped=True)
    assert result.abs_effect[0] == pytest.approx(ols.params["treatment"], rel=1e-9, abs=1e-9)
    # Variance reduction ≈ corr(x, y)² within the arms.
    within = pd.concat(
        [
            frame[frame.treatment == g][["x", "y"]] - frame[frame.treatment == g][["x", "y"]].mean()
            for g in (0, 1)
        ]
    )
    rho_sq = within.corr().iloc[0, 1] ** 2
    assert result.variance_reduction[0] == pytest.approx(rho_sq, abs=0.03)
    assert result.cuped[0]


def test_cuped_without_covariate_variation_is_the_plain_test() -> None:
    rng = np.random.default_rng(1)
    y_c, y_t = rng.normal(5, 2, 800), rng.normal(5.3, 2, 900)
    plain = one(ArmStats.from_values(y_c), ArmStats.from_values(y_t))
    cuped = one(
        ArmStats.from_values(y_c, np.zeros(800)),
        ArmStats.from_values(y_t, np.zeros(900)),
        cuped=True,
    )
    assert cuped.p_value[0] == pytest.approx(plain.p_value[0], rel=1e-12)


def test_ratio_delta_method_interval_covers_at_nominal_rate() -> None:
    rng = np.random.default_rng(99)
    sims, n = 2000, 400

    # orders per user ~ Poisson(2)+1, revenue per order ~ Gamma: the true ratio is E[rev]/E[orders]
    def arm(revenue_per_order: float) -> ArmStats:
        orders = rng.poisson(2.0, (sims, n)) + 1.0
        revenue = rng.gamma(orders * 2.0, revenue_per_order / 2.0)
        return ArmStats.of(
            n=np.full(sims, float(n)),
            sum=revenue.sum(1),
            sum_sq=(revenue**2).sum(1),
            den_sum=orders.sum(1),
            den_sum_sq=(orders**2).sum(1),
            num_den_sum=(revenue * orders).sum(1),
        )

    control, variant = arm(10.0), arm(11.0)
    batch = ComparisonBatch(
        control, variant, np.ones(sims, bool), np.zeros(sims, bool), np.arange(sims)
    )
    result = analyze(batch, AnalysisOptions(correction="none"))
    abs_cover = np.mean((result.abs_ci_low <= 1.0) & (result.abs_ci_high >= 1.0))
    rel_cover = np.mean((result.rel_ci_low <= 0.1) & (result.rel_ci_high >= 0.1))
    assert 0.935 <= abs_cover <= 0.965, abs_cover
    assert 0.935 <= rel_cover <= 0.965, rel_cover
