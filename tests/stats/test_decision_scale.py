"""One scale for decisions (docs/design.md §10): over random cases, ``significant`` ⇔ the
relative interval excludes 0 ⇔ ``p_value < α``, with one comparison per experiment (so the
correction leaves p alone)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stats.analysis import AnalysisOptions
from stats.experiment_analysis import Comparison, analyse


def arm(n: int, mean: float, sd: float) -> dict[str, float]:
    return {"n": float(n), "sum": n * mean, "sum_sq": (n - 1) * sd**2 + n * mean**2}


@settings(max_examples=300, deadline=None)
@given(
    n_c=st.integers(2, 5000),
    n_t=st.integers(2, 5000),
    mean_c=st.floats(0.01, 100),
    lift=st.floats(-0.5, 0.5),
    sd_c=st.floats(0.01, 100),
    sd_t=st.floats(0.01, 100),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_significant_iff_interval_excludes_zero_iff_p_below_alpha(
    n_c: int, n_t: int, mean_c: float, lift: float, sd_c: float, sd_t: float, alpha: float
) -> None:
    comparison = Comparison(
        "e",
        "m",
        "sum",
        "c",
        {"c": arm(n_c, mean_c, sd_c), "t": arm(n_t, mean_c * (1 + lift), sd_t)},
    )
    [result] = analyse([comparison], AnalysisOptions(alpha=alpha)).results
    assert result.rel_ci is not None and result.p_value is not None
    low, high = result.rel_ci
    excludes_zero = low > 0 or high < 0
    # Exactly at the boundary the two computations may round apart: skip that sliver.
    if abs(result.p_value - alpha) > 1e-9 * alpha:
        assert result.significant == excludes_zero == (result.p_value < alpha)
    assert result.adjusted_p_value == result.p_value
    assert result.abs_p_value is not None and 0.0 <= result.abs_p_value <= 1.0
