"""10,000 comparisons (Welch + relative + mSPRT + Bayesian + SRM): vectorised vs a scipy loop.

Run: .venv/bin/python benchmarks/stats_vectorised.py [--comparisons N] [--repeats R]
Both sides run in this process on the same inputs; prints both times and the ratio.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats as sps

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.srm import srm_p_values
from stats.sufficient import ArmStats

ALPHA, TAU = 0.05, 0.05


def make_inputs(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n_c = rng.integers(500, 50_000, size).astype(float)
    n_t = rng.integers(500, 50_000, size).astype(float)
    mean_c = rng.uniform(1, 20, size)
    mean_t = mean_c * rng.normal(1.0, 0.05, size)
    sd_c, sd_t = rng.uniform(1, 10, size), rng.uniform(1, 10, size)
    return {"n_c": n_c, "n_t": n_t, "mean_c": mean_c, "mean_t": mean_t, "sd_c": sd_c, "sd_t": sd_t}


def vectorised(data: dict[str, np.ndarray]) -> np.ndarray:
    n_c, n_t = data["n_c"], data["n_t"]
    control = ArmStats.of(
        n_c, data["mean_c"] * n_c, (n_c - 1) * data["sd_c"] ** 2 + n_c * data["mean_c"] ** 2
    )
    variant = ArmStats.of(
        n_t, data["mean_t"] * n_t, (n_t - 1) * data["sd_t"] ** 2 + n_t * data["mean_t"] ** 2
    )
    size = n_c.size
    batch = ComparisonBatch(
        control, variant, np.zeros(size, bool), np.zeros(size, bool), np.arange(size)
    )
    result = analyze(batch, AnalysisOptions(ALPHA, TAU, "none"))
    srm = srm_p_values(np.column_stack([n_c, n_t]), np.full((size, 2), 0.5))
    return np.column_stack(
        [result.p_value, result.rel_ci_low, result.sequential_p_value, result.chance_to_win, srm]
    )


def loop(data: dict[str, np.ndarray]) -> np.ndarray:
    rows = []
    for i in range(data["n_c"].size):
        n_c, n_t = data["n_c"][i], data["n_t"][i]
        m_c, m_t, s_c, s_t = data["mean_c"][i], data["mean_t"][i], data["sd_c"][i], data["sd_t"][i]
        p = sps.ttest_ind_from_stats(m_t, s_t, n_t, m_c, s_c, n_c, equal_var=False).pvalue
        v_c, v_t = s_c**2, s_t**2
        df = (v_c / n_c + v_t / n_t) ** 2 / (
            (v_c / n_c) ** 2 / (n_c - 1) + (v_t / n_t) ** 2 / (n_t - 1)
        )
        r = m_t / m_c - 1
        v_r = v_t / (n_t * m_c**2) + m_t**2 * v_c / (n_c * m_c**4)
        rel_low = r - sps.t.ppf(1 - ALPHA / 2, df) * math.sqrt(v_r)
        log_lambda = 0.5 * math.log(v_r / (v_r + TAU**2)) + TAU**2 * r**2 / (
            2 * v_r * (v_r + TAU**2)
        )
        seq_p = min(1.0, math.exp(-log_lambda))
        win = sps.norm.cdf(r / math.sqrt(v_r))
        srm = sps.chisquare([n_c, n_t], [(n_c + n_t) / 2] * 2).pvalue
        rows.append((p, rel_low, seq_p, win, srm))
    return np.array(rows)


def best_of(function, data: dict[str, np.ndarray], repeats: int) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(data)
        best = min(best, time.perf_counter() - start)
    return best, out  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--comparisons", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = make_inputs(args.comparisons)
    vectorised(data)  # warm-up: imports and first-call costs
    fast, fast_out = best_of(vectorised, data, args.repeats)
    slow, slow_out = best_of(loop, data, max(1, args.repeats // 5))
    np.testing.assert_allclose(fast_out, slow_out, rtol=1e-8)  # both sides compute the same
    print(f"comparisons:        {args.comparisons}")
    print(f"vectorised:         {fast * 1e3:9.1f} ms")
    print(f"per-comparison loop:{slow * 1e3:9.1f} ms")
    print(f"ratio (loop/vector):{slow / fast:9.1f}x")


if __name__ == "__main__":
    main()
