"""mSPRT and Bayesian read-outs against numeric integration; guardrail rule; A/A peeking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.bayesian import NormalPrior, chance_to_win, expected_loss, posterior
from stats.guardrails import guardrail_status
from stats.sequential import msprt_interval, msprt_p_value
from stats.sufficient import ArmStats


def mixture_likelihood_ratio(r: float, variance: float, tau: float, theta0: float = 0.0) -> float:
    """Λ by integrating the likelihood ratio over the N(theta0, τ²) mixing distribution."""
    sd = np.sqrt(variance)

    def integrand(theta: float) -> float:
        ratio = sps.norm.pdf(r, theta, sd) / sps.norm.pdf(r, theta0, sd)
        return float(ratio * sps.norm.pdf(theta, theta0, tau))

    value, _ = integrate.quad(integrand, theta0 - 12 * tau, theta0 + 12 * tau, limit=200)
    return float(value)


@pytest.mark.parametrize(
    ("r", "variance"), [(0.02, 0.0004), (-0.05, 0.001), (0.1, 0.0025), (0.001, 1e-5)]
)
def test_msprt_p_value_equals_numeric_mixture(r: float, variance: float) -> None:
    tau = 0.05
    ours = msprt_p_value(np.array([r]), np.array([variance]), tau)[0]
    assert ours == pytest.approx(min(1.0, 1 / mixture_likelihood_ratio(r, variance, tau)), rel=1e-6)


def test_msprt_interval_edges_are_where_lambda_hits_one_over_alpha() -> None:
    r, variance, tau, alpha = 0.04, 0.0004, 0.05, 0.05
    low, high = msprt_interval(np.array([r]), np.array([variance]), tau, alpha)
    for edge in (low[0], high[0]):
        assert mixture_likelihood_ratio(r, variance, tau, theta0=edge) == pytest.approx(
            1 / alpha, rel=1e-5
        )


def test_running_minimum_never_rises() -> None:
    p = msprt_p_value(
        np.array([0.0, 0.0]), np.array([0.001, 0.001]), 0.05, previous_p=np.array([0.2, np.nan])
    )
    assert p[0] == 0.2 and p[1] == 1.0


def test_bayesian_against_numeric_integration() -> None:
    r, variance = 0.03, 0.0004
    sd = np.sqrt(variance)
    win = integrate.quad(lambda t: sps.norm.pdf(t, r, sd), 0, np.inf)[0]
    loss = integrate.quad(lambda t: max(0.0, -t) * sps.norm.pdf(t, r, sd), -1, 1, points=[0])[0]
    assert chance_to_win(np.array([r]), np.array([variance]))[0] == pytest.approx(win, rel=1e-9)
    assert expected_loss(np.array([r]), np.array([variance]))[0] == pytest.approx(loss, rel=1e-7)


def test_normal_prior_posterior_against_grid() -> None:
    r, variance, prior = 0.08, 0.0016, NormalPrior(0.0, 0.03**2)
    grid = np.linspace(-0.5, 0.5, 400_001)
    density = sps.norm.pdf(r, grid, np.sqrt(variance)) * sps.norm.pdf(grid, 0.0, 0.03)
    density /= density.sum()
    grid_mean = (grid * density).sum()
    grid_var = ((grid - grid_mean) ** 2 * density).sum()
    mean, var = posterior(np.array([r]), np.array([variance]), prior)
    assert mean[0] == pytest.approx(grid_mean, rel=1e-6)
    assert var[0] == pytest.approx(grid_var, rel=1e-5)


def test_guardrail_rule_table() -> None:
    status = guardrail_status(
        seq_ci_low=np.array([0.05, 0.01, 0.05, -0.3, np.nan, -0.3]),
        seq_ci_high=np.array([0.2, 0.2, 0.2, -0.1, np.nan, -0.01]),
        n_control=np.array([1000, 1000, 100, 1000, 1000, 1000]),
        n_variant=np.array([1000, 1000, 1000, 1000, 1000, 1000]),
        margin=np.array([0.02, 0.02, 0.02, 0.05, 0.0, 0.05]),
        bad_increase=np.array([True, True, True, False, True, False]),
        min_users=np.array([500, 500, 500, 500, 500, 500]),
    )
    assert status.tolist() == ["breached", "ok", "waiting", "breached", "waiting", "ok"]


def test_aa_with_peeking_msprt_stays_below_alpha_naive_does_not() -> None:
    """2,000 A/A experiments, 20 looks each: how often does each rule ever reject?"""
    rng = np.random.default_rng(11)
    sims, looks, per_look = 2000, 20, 250
    y_c = rng.normal(10, 5, (sims, looks, per_look))
    y_t = rng.normal(10, 5, (sims, looks, per_look))
    n = per_look * np.arange(1, looks + 1, dtype=float)

    def cumulative(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.cumsum(y.sum(2), axis=1), np.cumsum((y**2).sum(2), axis=1)

    s_c, q_c = cumulative(y_c)
    s_t, q_t = cumulative(y_t)
    previous = np.full(sims, np.nan)
    naive_rejected = np.zeros(sims, bool)
    for look in range(looks):
        batch = ComparisonBatch(
            ArmStats.of(np.full(sims, n[look]), s_c[:, look], q_c[:, look]),
            ArmStats.of(np.full(sims, n[look]), s_t[:, look], q_t[:, look]),
            np.zeros(sims, bool),
            np.zeros(sims, bool),
            np.arange(sims),
            previous,
        )
        result = analyze(batch, AnalysisOptions(correction="none"))
        previous = result.sequential_p_value
        naive_rejected |= result.p_value < 0.05
    msprt_rate = float(np.mean(previous < 0.05))
    naive_rate = float(np.mean(naive_rejected))
    print(f"A/A false rejection with 20 looks: mSPRT {msprt_rate:.3%}, naive {naive_rate:.3%}")
    assert msprt_rate <= 0.05
    assert naive_rate > 2 * 0.05
