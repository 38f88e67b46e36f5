"""`xpstream analyze`: statistics over sufficient statistics given as JSON (docs/design.md §11):
the input validated here, the analysis by :mod:`stats.experiment_analysis`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stats.analysis import AnalysisOptions
from stats.bayesian import NormalPrior
from stats.corrections import Correction
from stats.experiment_analysis import Comparison, analyse


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

    alpha: float = Field(default=AnalysisOptions.alpha, gt=0, lt=1)
    tau: float = Field(default=AnalysisOptions.tau, gt=0)
    correction: Correction = AnalysisOptions.correction
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


def comparisons_of(request: AnalyzeInput) -> list[Comparison]:
    return [
        Comparison(
            experiment=c.experiment,
            metric=c.metric,
            kind=c.kind,
            control=c.control,
            arms={name: arm.stats() for name, arm in c.arms.items()},
            expected_split=c.expected_split,
            cuped=c.arms[c.control].has_covariate(),
            previous_sequential_p=c.previous_sequential_p_value or {},
        )
        for c in request.comparisons
    ]


def run_analysis(request: AnalyzeInput) -> dict[str, Any]:
    """The analysis as the JSON document of docs/design.md §11."""
    prior = NormalPrior(**request.prior) if request.prior else None
    options = AnalysisOptions(request.alpha, request.tau, request.correction, prior)
    return analyse(comparisons_of(request), options).to_json()
