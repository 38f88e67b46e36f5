"""Experiments analysed from what SQL holds: their cumulative statistics, each always-valid
p-value continued from the last look (the read side of the analyzer, reports and the demo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine

from config.catalog import Catalog, Experiment
from sinks.sql.results import running_min_p_values
from sinks.sql.store import cumulative_arms, window_sums
from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.experiment_analysis import Analysis, analyse, comparisons_for
from stats.sufficient import STATISTICS, ArmStats

POINT_FIELDS = ("window_start", "n_control", "n_variant", "rel_effect", "low", "high")


def analyse_stored(
    engine: Engine, catalog: Catalog, experiments: Sequence[Experiment], options: AnalysisOptions
) -> Analysis:
    arms = cumulative_arms(engine, [e.key for e in experiments])
    previous = running_min_p_values(engine)
    return analyse(
        [c for e in experiments for c in comparisons_for(catalog, e, arms, previous)], options
    )


def lift_over_time(
    engine: Engine,
    catalog: Catalog,
    experiment: Experiment,
    options: AnalysisOptions,
    points: int | None = None,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(metric, variant) → after each window: users in both arms, the relative effect and its
    always-valid interval, intersected with every earlier one (a confidence sequence stays
    valid intersected: Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic
    confidence sequences"). Every window of every comparison in one vectorised analysis; with
    ``points``, after each of about that many periods instead (window_sums)."""
    rows = window_sums(engine, experiment.key, points)
    windows = sorted({int(r[2]) for r in rows})
    if not windows:
        return {}
    index = {w: i for i, w in enumerate(windows)}
    sums: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
    for variant, metric, window, *statistics in rows:
        cell = sums.get((variant, metric))
        if cell is None:
            cell = sums[(variant, metric)] = np.zeros((len(windows), len(STATISTICS)))
        cell[index[int(window)]] = [value or 0.0 for value in statistics]
    cumulative = {key: np.cumsum(cell, axis=0) for key, cell in sums.items()}
    pairs = [
        (metric, variant)
        for metric in experiment.analysed_metrics
        for variant in experiment.variant_keys
        if variant != experiment.control
        and (variant, metric) in cumulative
        and (experiment.control, metric) in cumulative
    ]
    if not pairs:
        return {}

    def arm(side: str | None) -> ArmStats:
        stacked = np.concatenate([cumulative[(side or v, m)] for m, v in pairs])
        return ArmStats(**{name: stacked[:, i] for i, name in enumerate(STATISTICS)})

    control, variant = arm(experiment.control), arm(None)
    ratio = np.repeat([catalog.metric(m).kind == "ratio" for m, _ in pairs], len(windows))
    computed = analyze(
        ComparisonBatch(
            control,
            variant,
            ratio,
            ~ratio & ((control.x_sum_sq > 0) | (variant.x_sum_sq > 0)),
            np.zeros(len(ratio), dtype=np.int64),
        ),
        AnalysisOptions(options.alpha, options.tau, "none"),
    )
    series = {}
    for number, pair in enumerate(pairs):
        part = slice(number * len(windows), (number + 1) * len(windows))
        low = _running(computed.sequential_rel_ci_low[part], np.fmax)
        high = _running(computed.sequential_rel_ci_high[part], np.fmin)
        columns = zip(
            windows,
            control.n[part].tolist(),
            variant.n[part].tolist(),
            _nullable(computed.rel_effect[part]),
            _nullable(low),
            _nullable(high),
            strict=True,
        )
        series[pair] = [dict(zip(POINT_FIELDS, row, strict=True)) for row in columns]
    return series


def _running(values: npt.NDArray[np.float64], keep: Any) -> npt.NDArray[np.float64]:
    """The running intersection bound, ignoring undefined (NaN) looks."""
    result: npt.NDArray[np.float64] = keep.accumulate(values)
    return result


def _nullable(values: npt.NDArray[np.float64]) -> list[float | None]:
    """Undefined numbers (NaN, infinite) as None, for JSON."""
    return [v if f else None for v, f in zip(values.tolist(), np.isfinite(values), strict=True)]
