"""The effect over time (`GET /v1/experiments/{key}/lift`, the console's charts) on the demo's
database: users after each window against pandas' cumulative sums of the raw window rows, the
last point against the analyzer's stored look, the always-valid interval only narrowing, and
the period sums ending where the full series ends."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import requests

from tests.console.conftest import Console


def lift(console: Console, key: str, points: int | None = None) -> pd.DataFrame:
    response = requests.get(
        f"{console.url}/v1/experiments/{key}/lift",
        params={"points": points} if points else None,
        headers={"Authorization": f"Bearer {console.keys['analyst']}"},
        timeout=30,
    )
    response.raise_for_status()
    return pd.DataFrame(response.json())


@pytest.mark.parametrize("key", ["checkout-lift", "risky-banner"])
def test_the_effect_over_time_adds_up(console: Console, key: str) -> None:
    series = lift(console, key)
    windows = pd.read_sql(
        "SELECT variant, metric, window_start, n FROM window_aggregates WHERE experiment = "
        f"'{key}'",
        console.engine,
    )
    users = windows.groupby(["metric", "variant", "window_start"])["n"].sum().sort_index()
    cumulative = users.groupby(level=["metric", "variant"]).cumsum()
    for row in series.itertuples():
        assert row.n_variant == cumulative[(row.metric, row.variant, row.window_start)]
        assert row.n_control == cumulative[(row.metric, "control", row.window_start)]

    report = requests.get(
        f"{console.url}/v1/experiments/{key}/report",
        headers={"Authorization": f"Bearer {console.keys['analyst']}"},
        timeout=30,
    ).json()
    for result in report["results"]:
        line = series[(series.metric == result["metric"]) & (series.variant == result["variant"])]
        last = line.iloc[-1]
        assert last.n_variant == result["n_variant"]
        assert last.rel_effect == pytest.approx(result["rel_effect"], rel=1e-9)
        # an intersection only narrows; the last one lies within the stored look's interval
        low, high = line["low"].dropna(), line["high"].dropna()
        assert low.is_monotonic_increasing and high.is_monotonic_decreasing
        stored_low, stored_high = result["sequential_rel_ci"]
        assert stored_low - 1e-9 <= last.low and last.high <= stored_high + 1e-9

    coarse = lift(console, key, points=12)
    for (metric, variant), line in coarse.groupby(["metric", "variant"]):
        assert len(line) <= 13
        full = series[(series.metric == metric) & (series.variant == variant)].iloc[-1]
        last = line.iloc[-1]
        assert (last.window_start, last.n_variant) == (full.window_start, full.n_variant)
        assert math.isclose(last.rel_effect, full.rel_effect, rel_tol=1e-12)
