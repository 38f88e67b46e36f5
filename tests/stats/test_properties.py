"""Property-based: sufficient statistics add associatively; window rows sum to the whole."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.sufficient import ArmStats

# Integer-valued floats keep every sum exact, so equality is exact too.
values = st.lists(st.integers(-1000, 1000).map(float), min_size=1, max_size=40)


def stats_of(ys: list[float]) -> ArmStats:
    y = np.array(ys)
    return ArmStats.from_values(y, x=np.roll(y, 1), den=np.abs(y) + 1)


def same(a: ArmStats, b: ArmStats) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(ArmStats))


@given(values, values, values)
def test_addition_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    sa, sb, sc = stats_of(a), stats_of(b), stats_of(c)
    assert same((sa + sb) + sc, sa + (sb + sc))
    assert same(sa + sb, sb + sa)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 100, allow_nan=False), min_size=6, max_size=200),
    st.lists(st.floats(0, 100, allow_nan=False), min_size=6, max_size=200),
    st.integers(1, 8),
    st.randoms(use_true_random=False),
)
def test_analysing_summed_window_rows_equals_analysing_raw_data(
    control: list[float], variant: list[float], windows: int, rnd: object
) -> None:
    def windowed(ys: list[float]) -> ArmStats:
        y = np.array(ys)
        x = np.sqrt(y) + 1
        window_of = np.array([rnd.randrange(windows) for _ in ys])  # type: ignore[attr-defined]
        rows = [ArmStats.from_values(y[window_of == w], x[window_of == w]) for w in range(windows)]
        total = rows[0]
        for row in rows[1:]:
            total = total + row
        return total

    def whole(ys: list[float]) -> ArmStats:
        y = np.array(ys)
        return ArmStats.from_values(y, np.sqrt(y) + 1)

    options = AnalysisOptions(correction="none")
    flags = (np.array([False]), np.array([True]), np.array([0]))
    from_windows = analyze(ComparisonBatch(windowed(control), windowed(variant), *flags), options)
    from_raw = analyze(ComparisonBatch(whole(control), whole(variant), *flags), options)
    for name in ("abs_effect", "p_value", "rel_effect", "sequential_p_value", "chance_to_win"):
        np.testing.assert_allclose(
            getattr(from_windows, name), getattr(from_raw, name), rtol=1e-7, atol=1e-9, err_msg=name
        )
