"""Experiments analysed from their per-arm sufficient statistics: comparisons in, typed results
out (as gbstats' ``models/results.py``), on one scale for decisions (docs/design.md §10).

This is the one place that turns statistics into decisions: the analyzer, ``report``,
``replay``, the demo and ``xpstream analyze`` all call :func:`analyse`; formatting is theirs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from config.catalog import Catalog, Experiment, Guardrail
from stats.analysis import AnalysisOptions, ComparisonBatch, ComparisonResults
from stats.analysis import analyze as analyze_batch
from stats.guardrails import guardrail_status
from stats.srm import SRM_THRESHOLD, srm_p_values
from stats.sufficient import STATISTICS, ArmStats

MetricKind = Literal["sum", "count", "conversion", "ratio"]
Interval = tuple[float, float]
GuardrailState = Literal["ok", "breached", "waiting"]
ComparisonKey = tuple[str, str, str]  # experiment, metric, variant
ArmKey = tuple[str, str, str]  # experiment, variant, metric
EMPTY_ARM: Mapping[str, float] = dict.fromkeys(STATISTICS, 0.0)


@dataclass(frozen=True)
class Comparison:
    """One metric of one experiment: every arm's named statistics, compared with ``control``."""

    experiment: str
    metric: str
    kind: MetricKind
    control: str
    arms: Mapping[str, Mapping[str, float]]  # variant → statistic name → value
    expected_split: Mapping[str, float] | None = None
    cuped: bool = False
    previous_sequential_p: Mapping[str, float] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return [v for v in self.arms if v != self.control]


@dataclass(frozen=True)
class ComparisonResult:
    """One variant against its control. ``p_value``, ``adjusted_p_value`` and ``significant``
    are on the relative scale, consistent with ``rel_ci``; ``abs_p_value`` and ``abs_ci`` are
    Welch's test of the absolute difference. ``None``: undefined, and ``notes`` say why."""

    experiment: str
    metric: str
    variant: str
    control: str
    n_control: int
    n_variant: int
    mean_control: float | None
    mean_variant: float | None
    abs_effect: float | None
    abs_ci: Interval | None
    abs_p_value: float | None
    rel_effect: float | None
    rel_ci: Interval | None
    p_value: float | None
    adjusted_p_value: float | None
    significant: bool
    cuped: bool
    variance_reduction: float | None
    sequential_p_value: float | None
    sequential_rel_ci: Interval | None
    chance_to_win: float | None
    expected_loss: float | None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON row of ``xpstream analyze`` (docs/design.md §11): intervals as lists."""
        row = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("abs_ci", "rel_ci", "sequential_rel_ci"):
            row[name] = None if row[name] is None else list(row[name])
        row["notes"] = list(self.notes)
        return row


@dataclass(frozen=True)
class SrmResult:
    experiment: str
    p_value: float
    mismatch: bool

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "p_value": self.p_value, "mismatch": self.mismatch}


@dataclass(frozen=True)
class GuardrailCheck:
    guardrail: Guardrail
    variant: str
    result: ComparisonResult
    status: GuardrailState


@dataclass(frozen=True)
class Analysis:
    comparisons: tuple[Comparison, ...]
    results: tuple[ComparisonResult, ...]
    srm: tuple[SrmResult, ...]

    def results_of(self, experiment: str) -> list[ComparisonResult]:
        return [r for r in self.results if r.experiment == experiment]

    def srm_of(self, experiment: str) -> SrmResult | None:
        return next((s for s in self.srm if s.experiment == experiment), None)

    def arm_sizes(self, experiment: str) -> dict[str, int]:
        """Users per arm, from the experiment's first comparison (every metric counts them)."""
        first = next(c for c in self.comparisons if c.experiment == experiment)
        return {variant: int(stats.get("n", 0.0)) for variant, stats in first.arms.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.to_json() for r in self.results],
            "srm": [s.to_json() for s in self.srm],
        }


def analyse(comparisons: Sequence[Comparison], options: AnalysisOptions) -> Analysis:
    """Every variant of every comparison in one vectorised call; SRM once per experiment."""
    pairs = [(c, v) for c in comparisons for v in c.variants]
    results: tuple[ComparisonResult, ...] = ()
    if pairs:
        groups = {key: i for i, key in enumerate(dict.fromkeys(c.experiment for c in comparisons))}
        batch = ComparisonBatch(
            control=ArmStats.from_rows([c.arms[c.control] for c, _ in pairs]),
            variant=ArmStats.from_rows([c.arms[v] for c, v in pairs]),
            is_ratio=np.array([c.kind == "ratio" for c, _ in pairs]),
            use_cuped=np.array([c.cuped for c, _ in pairs]),
            group=np.array([groups[c.experiment] for c, _ in pairs], dtype=np.int64),
            previous_sequential_p=np.array(
                [c.previous_sequential_p.get(v, np.nan) for c, v in pairs], dtype=np.float64
            ),
        )
        computed = analyze_batch(batch, options)
        results = tuple(_result(c, v, computed, i) for i, (c, v) in enumerate(pairs))
    return Analysis(tuple(comparisons), results, _srm(comparisons))


def _result(
    comparison: Comparison, variant: str, computed: ComparisonResults, index: int
) -> ComparisonResult:
    row = computed.row(index)
    return ComparisonResult(
        experiment=comparison.experiment,
        metric=comparison.metric,
        variant=variant,
        control=comparison.control,
        n_control=int(row["n_control"]),
        n_variant=int(row["n_variant"]),
        mean_control=_number(row["mean_control"]),
        mean_variant=_number(row["mean_variant"]),
        abs_effect=_number(row["abs_effect"]),
        abs_ci=_interval(row["abs_ci_low"], row["abs_ci_high"]),
        abs_p_value=_number(row["abs_p_value"]),
        rel_effect=_number(row["rel_effect"]),
        rel_ci=_interval(row["rel_ci_low"], row["rel_ci_high"]),
        p_value=_number(row["p_value"]),
        adjusted_p_value=_number(row["adjusted_p_value"]),
        significant=bool(row["significant"]),
        cuped=bool(row["cuped"]),
        variance_reduction=_number(row["variance_reduction"]),
        sequential_p_value=_number(row["sequential_p_value"]),
        sequential_rel_ci=_interval(row["sequential_rel_ci_low"], row["sequential_rel_ci_high"]),
        chance_to_win=_number(row["chance_to_win"]),
        expected_loss=_number(row["expected_loss"]),
        notes=tuple(row["reasons"]),
    )


def _srm(comparisons: Sequence[Comparison]) -> tuple[SrmResult, ...]:
    """SRM once per experiment, from its first comparison that gives an expected split."""
    chosen: dict[str, Comparison] = {}
    for comparison in comparisons:
        if comparison.expected_split and comparison.experiment not in chosen:
            chosen[comparison.experiment] = comparison
    if not chosen:
        return ()
    width = max(len(c.arms) for c in chosen.values())
    observed = np.full((len(chosen), width), np.nan)
    shares = np.full((len(chosen), width), np.nan)
    for row, comparison in enumerate(chosen.values()):
        split = comparison.expected_split or {}
        for column, (name, arm) in enumerate(comparison.arms.items()):
            observed[row, column] = arm.get("n", 0.0)
            shares[row, column] = split.get(name, 0.0)
    p_values = srm_p_values(observed, shares)
    return tuple(
        SrmResult(key, float(p), bool(p < SRM_THRESHOLD))
        for key, p in zip(chosen, p_values, strict=True)
    )


def comparisons_for(
    catalog: Catalog,
    experiment: Experiment,
    arms: Mapping[ArmKey, Mapping[str, float]],
    previous_p: Mapping[ComparisonKey, float] | None = None,
) -> list[Comparison]:
    """One comparison per analysed metric of ``experiment`` from cumulative statistics keyed by
    (experiment, variant, metric); CUPED wherever a pre-period covariate exists; ``previous_p``
    continues each always-valid p-value from the last look."""
    previous_p = previous_p or {}
    weights = {v.key: v.weight for v in experiment.variants}
    total_weight = sum(weights.values()) or 1.0
    comparisons = []
    for metric_key in experiment.analysed_metrics:
        kind = catalog.metric(metric_key).kind
        per_arm = {
            v: arms.get((experiment.key, v, metric_key), EMPTY_ARM) for v in experiment.variant_keys
        }
        comparisons.append(
            Comparison(
                experiment=experiment.key,
                metric=metric_key,
                kind=kind,
                control=experiment.control,
                arms=per_arm,
                expected_split={v: w / total_weight for v, w in weights.items()},
                cuped=kind != "ratio" and any(s["x_sum_sq"] > 0 for s in per_arm.values()),
                previous_sequential_p={
                    v: previous_p[(experiment.key, metric_key, v)]
                    for v in experiment.variant_keys
                    if (experiment.key, metric_key, v) in previous_p
                },
            )
        )
    return comparisons


def guardrail_checks(
    experiment: Experiment, results: Sequence[ComparisonResult]
) -> list[GuardrailCheck]:
    """The breach rule (docs/design.md §10) for every guardrail × treatment arm, in one call."""
    by_key = {(r.metric, r.variant): r for r in results}
    pairs = [
        (g, v, by_key[(g.metric, v)])
        for g in experiment.guardrails
        for v in experiment.variant_keys
        if v != experiment.control and (g.metric, v) in by_key
    ]
    if not pairs:
        return []
    intervals = np.array([r.sequential_rel_ci or (np.nan, np.nan) for _, _, r in pairs])
    statuses = guardrail_status(
        intervals[:, 0],
        intervals[:, 1],
        np.array([r.n_control for _, _, r in pairs], dtype=float),
        np.array([r.n_variant for _, _, r in pairs], dtype=float),
        np.array([g.margin for g, _, _ in pairs]),
        np.array([g.bad_direction == "increase" for g, _, _ in pairs]),
        np.array([g.min_users for g, _, _ in pairs], dtype=float),
    )
    return [
        GuardrailCheck(g, v, r, str(status))  # type: ignore[arg-type]
        for (g, v, r), status in zip(pairs, statuses, strict=True)
    ]


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _interval(low: float, high: float) -> Interval | None:
    low_value, high_value = _number(low), _number(high)
    return None if low_value is None or high_value is None else (low_value, high_value)
