"""Seeded simulations: 95% intervals cover the true effect 93.5–96.5% of the time."""

from __future__ import annotations

import numpy as np

from stats.analysis import AnalysisOptions, ComparisonBatch, ComparisonResults, analyze
from stats.sufficient import ArmStats

SIMS = 2500
LOW, HIGH = 0.935, 0.965


def run(control: ArmStats, variant: ArmStats, cuped: bool = False) -> ComparisonResults:
    size = len(control)
    batch = ComparisonBatch(
        control, variant, np.zeros(size, bool), np.full(size, cuped), np.arange(size)
    )
    return analyze(batch, AnalysisOptions(correction="none"))


def coverage(low: np.ndarray, high: np.ndarray, truth: float) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def arm_sums(y: np.ndarray, x: np.ndarray | None = None) -> ArmStats:
    x = np.zeros_like(y) if x is None else x
    return ArmStats.of(
        n=np.full(y.shape[0], float(y.shape[1])),
        sum=y.sum(1),
        sum_sq=(y * y).sum(1),
        x_sum=x.sum(1),
        x_sum_sq=(x * x).sum(1),
        xy_sum=(x * y).sum(1),
    )


def test_mean_metric_intervals_are_calibrated() -> None:
    rng = np.random.default_rng(101)
    y_c = rng.exponential(10.0, (SIMS, 400))
    y_t = rng.exponential(10.5, (SIMS, 450))
    result = run(arm_sums(y_c), arm_sums(y_t))
    abs_cov = coverage(result.abs_ci_low, result.abs_ci_high, 0.5)
    rel_cov = coverage(result.rel_ci_low, result.rel_ci_high, 0.05)
    print(f"mean metric coverage: absolute {abs_cov:.3f}, relative {rel_cov:.3f}")
    assert LOW <= abs_cov <= HIGH
    assert LOW <= rel_cov <= HIGH


def test_conversion_intervals_are_calibrated() -> None:
    rng = np.random.default_rng(202)
    n = 3000
    conv_c = rng.binomial(n, 0.10, SIMS).astype(float)
    conv_t = rng.binomial(n, 0.11, SIMS).astype(float)
    size = np.full(SIMS, float(n))
    result = run(ArmStats.of(size, conv_c, conv_c), ArmStats.of(size, conv_t, conv_t))
    abs_cov = coverage(result.abs_ci_low, result.abs_ci_high, 0.01)
    rel_cov = coverage(result.rel_ci_low, result.rel_ci_high, 0.1)
    print(f"conversion coverage: absolute {abs_cov:.3f}, relative {rel_cov:.3f}")
    assert LOW <= abs_cov <= HIGH
    assert LOW <= rel_cov <= HIGH


def test_cuped_intervals_are_calibrated_and_narrower() -> None:
    rng = np.random.default_rng(303)
    n = 300
    x_c, x_t = rng.normal(20, 5, (SIMS, n)), rng.normal(20, 5, (SIMS, n))
    y_c = 0.8 * x_c + rng.normal(0, 3, (SIMS, n))
    y_t = 0.8 * x_t + 1.0 + rng.normal(0, 3, (SIMS, n))
    adjusted = run(arm_sums(y_c, x_c), arm_sums(y_t, x_t), cuped=True)
    plain = run(arm_sums(y_c), arm_sums(y_t))
    abs_cov = coverage(adjusted.abs_ci_low, adjusted.abs_ci_high, 1.0)
    rel_cov = coverage(adjusted.rel_ci_low, adjusted.rel_ci_high, 1.0 / 16.0)
    width_ratio = np.median(
        (adjusted.abs_ci_high - adjusted.abs_ci_low) / (plain.abs_ci_high - plain.abs_ci_low)
    )
    print(
        f"CUPED coverage: absolute {abs_cov:.3f}, relative {rel_cov:.3f}; "
        f"median CI width vs plain {width_ratio:.2f}"
    )
    assert LOW <= abs_cov <= HIGH
    assert LOW <= rel_cov <= HIGH
    # corr² = 16/25 ≈ 0.64: the interval shrinks to about √0.36 = 0.6 of the plain one
    assert 0.55 < width_ratio < 0.65
