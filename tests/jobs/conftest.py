"""Analyzer tests: a catalog in a fresh SQLite file, sufficient statistics written straight into
``window_aggregates`` from user-level data, and an oracle computed from those users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from config.catalog import parse_catalog
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import flush_partition_state, make_engine, save_catalog
from stats.sufficient import STATISTICS

GUARDED: dict[str, Any] = {
    "metrics": [
        {"key": "purchase", "kind": "conversion"},
        {"key": "errors", "kind": "count", "higher_is_better": False},
    ],
    "flags": [{"key": "banner", "enabled": True, "rollout": 1.0}],
    "experiments": [
        {
            "key": "risky",
            "flag": "banner",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["purchase"],
            "guardrails": [
                {
                    "metric": "errors",
                    "bad_direction": "increase",
                    "margin": 0.0,
                    "min_users": 1000,
                    "action": "rollback",
                }
            ],
        }
    ],
}


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/analyzer.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(engine, parse_catalog(GUARDED))
    yield engine
    engine.dispose()


def users(n_per_arm: int, errors_rate: dict[str, float], seed: int) -> pd.DataFrame:
    """One row per user: arm, errors (Poisson), purchase (0/1)."""
    rng = np.random.default_rng(seed)
    frames = [
        pd.DataFrame(
            {
                "variant": variant,
                "errors": rng.poisson(rate, n_per_arm).astype(float),
                "purchase": (rng.random(n_per_arm) < 0.3).astype(float),
            }
        )
        for variant, rate in errors_rate.items()
    ]
    return pd.concat(frames, ignore_index=True)


def write_users(
    engine: Engine, frame: pd.DataFrame, offset: int = 0, experiment: str = "risky"
) -> None:
    """The sufficient statistics of ``frame`` as one window row per arm and metric."""
    rows = []
    for (variant, metric), values in frame.melt("variant", var_name="metric").groupby(
        ["variant", "metric"]
    )["value"]:
        rows.append(
            {
                "experiment": experiment,
                "variant": variant,
                "metric": metric,
                "window_start": 0,
                "partition": 0,
                "n": float(len(values)),
                "sum": float(values.sum()),
                "sum_sq": float((values**2).sum()),
                "x_sum": 0.0,
                "x_sum_sq": 0.0,
                "xy_sum": 0.0,
                "den_sum": 0.0,
                "den_sum_sq": 0.0,
                "num_den_sum": 0.0,
                "source_offset": offset,
            }
        )
    write_window_rows(engine, rows)


def write_window_rows(engine: Engine, windows: list[dict[str, Any]]) -> None:
    """Window rows as a worker flushes them, with the partitions' totals beside them."""
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in windows:
        key = (row["experiment"], row["variant"], row["metric"], row["partition"])
        total = totals.setdefault(
            key,
            {"experiment": key[0], "variant": key[1], "metric": key[2], "partition": key[3]}
            | dict.fromkeys(STATISTICS, 0.0)
            | {"source_offset": -1},
        )
        for name in STATISTICS:
            total[name] += row[name]
        total["source_offset"] = max(total["source_offset"], row["source_offset"])
    flush_partition_state(engine, windows, [], [], totals=list(totals.values()))


def oracle_relative(frame: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Relative effect and its delta-method variance, straight from the user rows (pandas)."""
    by_arm = frame.groupby("variant")[metric].agg(["mean", "var", "count"])
    c, t = by_arm.loc["control"], by_arm.loc["treatment"]
    r = t["mean"] / c["mean"] - 1
    v = t["var"] / (t["count"] * c["mean"] ** 2) + t["mean"] ** 2 * c["var"] / (
        c["count"] * c["mean"] ** 4
    )
    return float(r), float(v)


def oracle_msprt(r: float, v: float, tau: float, alpha: float) -> tuple[float, float, float]:
    """Johari et al. (2017): always-valid p-value and interval, written out from the paper."""
    lam = np.sqrt(v / (v + tau**2)) * np.exp(tau**2 * r**2 / (2 * v * (v + tau**2)))
    half = np.sqrt(v * (v + tau**2) / tau**2 * (np.log((v + tau**2) / v) - 2 * np.log(alpha)))
    return float(min(1.0, 1 / lam)), float(r - half), float(r + half)
