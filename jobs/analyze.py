"""`xpstream analyze`: statistics over sufficient statistics given as JSON (DESIGN.md §11)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stats.analysis import AnalysisOptions, ComparisonBatch, ComparisonResults, analyze
from stats.bayesian import NormalPrior
from stats.srm import SRM_THRESHOLD, srm_p_values
from stats.sufficient import ArmStats


class AnalyzeInputError(ValueError):
    """Bad input; the message names the comparison and the field."""


class ArmInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: float = Field(ge=0, allow_inf_nan=False)
    sum: float = Field(allow_inf_nan=False)
    sum_sq: float = Field(ge=0, allow_inf_nan=False)
    x_sum: float | None = Field(default=None, allow_inf_nan=False)
    x_sum_sq: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    xy_sum: float | None = Field(default=None, allow_inf_nan=False)
    den_sum: float | None = Field(default=None, allow_inf_nan=False)
    den_sum_sq: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    num_den_sum: float | None = Field(default=None, allow_inf_nan=False)

    def has_covariate(self) -> bool:
        return self.x_sum is not None

    def stats(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ComparisonInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    kind: Literal["sum", "count", "conversion", "ratio"] = "sum"
    control: str = Field(min_length=1)
    expected_split: dict[str, float] | None = None
    arms: dict[str, ArmInput]
    previous_sequential_p_value: dict[str, float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ComparisonInput:
        if self.control not in self.arms:
            raise ValueError(f"control: arm {self.control!r} is not in arms {sorted(self.arms)}")
        if len(self.arms) < 2:
            raise ValueError("arms: need the control and at least one variant")
        cuped = {name: arm.has_covariate() for name, arm in self.arms.items()}
        if len(set(cuped.values())) > 1:
            raise ValueError("arms: give x_sum, x_sum_sq, xy_sum for every arm or for none")
        for name, arm in self.arms.items():
            _check_arm(name, arm, self.kind)
        if self.expected_split is not None:
            if set(self.expected_split) != set(self.arms):
                raise ValueError(
                    f"expected_split: arms {sorted(self.expected_split)} differ from "
                    f"{sorted(self.arms)}"
                )
            if any(not share > 0 for share in self.expected_split.values()):
                raise ValueError("expected_split: every share must be positive")
        return self


class AnalyzeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(default=0.05, gt=0, lt=1)
    tau: float = Field(default=0.05, gt=0)
    correction: Literal["holm", "bh", "none"] = "holm"
    prior: dict[str, float] | None = None
    comparisons: list[ComparisonInput]


def _check_arm(name: str, arm: ArmInput, kind: str) -> None:
    """Refuse sums that no set of users can produce."""
    where = f"arms.{name}"
    if arm.n < 2:
        raise ValueError(f"{where}.n: {arm.n:g} users; at least 2 are needed for a variance")
    if arm.n != int(arm.n):
        raise ValueError(f"{where}.n: must be a whole number of users")
    slack = 1e-9 * max(arm.sum_sq, 1.0)
    if arm.sum_sq - arm.sum**2 / arm.n < -slack:
        raise ValueError(f"{where}.sum_sq: negative variance (sum_sq < sum²/n): inconsistent sums")
    covariate = (arm.x_sum, arm.x_sum_sq, arm.xy_sum)
    if any(v is not None for v in covariate) and any(v is None for v in covariate):
        raise ValueError(f"{where}: x_sum, x_sum_sq and xy_sum go together")
    if (
        arm.x_sum is not None
        and arm.x_sum_sq is not None
        and arm.x_sum_sq - arm.x_sum**2 / arm.n < -1e-9 * max(arm.x_sum_sq, 1.0)
    ):
        raise ValueError(f"{where}.x_sum_sq: negative covariate variance: inconsistent sums")
    if kind == "ratio":
        if arm.den_sum is None or arm.den_sum_sq is None or arm.num_den_sum is None:
            raise ValueError(
                f"{where}.den_sum: ratio metrics need den_sum, den_sum_sq, num_den_sum"
            )
        if arm.den_sum_sq - arm.den_sum**2 / arm.n < -1e-9 * max(arm.den_sum_sq, 1.0):
            raise ValueError(f"{where}.den_sum_sq: negative denominator variance")
    if kind == "conversion" and not 0 <= arm.sum <= arm.n:
        raise ValueError(f"{where}.sum: {arm.sum:g} conversions among {arm.n:g} users")


def parse_input(payload: Any) -> AnalyzeInput:
    try:
        return AnalyzeInput.model_validate(payload)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = list(error["loc"])
            prefix = ""
            if len(loc) >= 2 and loc[0] == "comparisons" and isinstance(loc[1], int):
                comparison = _describe(payload, loc[1])
                prefix = f"comparison {loc[1]} ({comparison}): "
                loc = loc[2:]
            message = str(error["msg"]).removeprefix("Value error, ")
            field = ".".join(str(part) for part in loc)
            messages.append(f"{prefix}{field}: {message}" if field else f"{prefix}{message}")
        raise AnalyzeInputError("; ".join(messages)) from None


def _describe(payload: Any, index: int) -> str:
    try:
        item = payload["comparisons"][index]
        return f"{item.get('experiment', '?')}/{item.get('metric', '?')}"
    except (KeyError, IndexError, TypeError, AttributeError):
        return "?"


def run_analysis(request: AnalyzeInput) -> dict[str, Any]:
    """The analysis as the JSON document of DESIGN.md §11."""
    pairs = [
        (comparison, variant)
        for comparison in request.comparisons
        for variant in comparison.arms
        if variant != comparison.control
    ]
    experiments = {
        key: i for i, key in enumerate(dict.fromkeys(c.experiment for c in request.comparisons))
    }
    results: list[dict[str, Any]] = []
    if pairs:
        batch = ComparisonBatch(
            control=ArmStats.concat([ArmStats.of(**c.arms[c.control].stats()) for c, _ in pairs]),
            variant=ArmStats.concat([ArmStats.of(**c.arms[v].stats()) for c, v in pairs]),
            is_ratio=np.array([c.kind == "ratio" for c, _ in pairs]),
            use_cuped=np.array([c.arms[c.control].has_covariate() for c, _ in pairs]),
            group=np.array([experiments[c.experiment] for c, _ in pairs], dtype=np.int64),
            previous_sequential_p=np.array(
                [(c.previous_sequential_p_value or {}).get(v, np.nan) for c, v in pairs]
            ),
        )
        prior = NormalPrior(**request.prior) if request.prior else None
        options = AnalysisOptions(request.alpha, request.tau, request.correction, prior)
        computed = analyze(batch, options)
        results = [
            result_row(c.experiment, c.metric, c.control, v, computed, i)
            for i, (c, v) in enumerate(pairs)
        ]
    return {"results": results, "srm": srm_rows(request.comparisons)}


def result_row(
    experiment: str,
    metric: str,
    control: str,
    variant: str,
    computed: ComparisonResults,
    index: int,
) -> dict[str, Any]:
    row = computed.row(index)
    return {
        "experiment": experiment,
        "metric": metric,
        "variant": variant,
        "control": control,
        "n_control": int(row["n_control"]),
        "n_variant": int(row["n_variant"]),
        "mean_control": _number(row["mean_control"]),
        "mean_variant": _number(row["mean_variant"]),
        "abs_effect": _number(row["abs_effect"]),
        "abs_ci": _interval(row["abs_ci_low"], row["abs_ci_high"]),
        "rel_effect": _number(row["rel_effect"]),
        "rel_ci": _interval(row["rel_ci_low"], row["rel_ci_high"]),
        "p_value": _number(row["p_value"]),
        "adjusted_p_value": _number(row["adjusted_p_value"]),
        "significant": bool(row["significant"]),
        "cuped": bool(row["cuped"]),
        "variance_reduction": _number(row["variance_reduction"]),
        "sequential_p_value": _number(row["sequential_p_value"]),
        "sequential_rel_ci": _interval(row["sequential_rel_ci_low"], row["sequential_rel_ci_high"]),
        "chance_to_win": _number(row["chance_to_win"]),
        "expected_loss": _number(row["expected_loss"]),
        "notes": row["reasons"],
    }


def srm_rows(comparisons: list[ComparisonInput]) -> list[dict[str, Any]]:
    """SRM once per experiment, from the first comparison that gives an expected split."""
    chosen: dict[str, ComparisonInput] = {}
    for comparison in comparisons:
        if comparison.expected_split and comparison.experiment not in chosen:
            chosen[comparison.experiment] = comparison
    if not chosen:
        return []
    width = max(len(c.arms) for c in chosen.values())
    observed = np.full((len(chosen), width), np.nan)
    shares = np.full((len(chosen), width), np.nan)
    for row, comparison in enumerate(chosen.values()):
        split = comparison.expected_split or {}
        for column, (name, arm) in enumerate(comparison.arms.items()):
            observed[row, column] = arm.n
            shares[row, column] = split.get(name, 0.0)
    p_values = srm_p_values(observed, shares)
    return [
        {"experiment": key, "p_value": float(p), "mismatch": bool(p < SRM_THRESHOLD)}
        for key, p in zip(chosen, p_values, strict=True)
    ]


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _interval(low: float, high: float) -> list[float] | None:
    low_value, high_value = _number(low), _number(high)
    return None if low_value is None or high_value is None else [low_value, high_value]
