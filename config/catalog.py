"""The catalog: metrics, flags and experiments with their guardrails (docs/design.md §9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MetricKind = Literal["sum", "count", "conversion", "ratio"]
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_VARIANTS = 100
MAX_METRICS_PER_EXPERIMENT = 100
MAX_MIN_USERS = 10**9
WEIGHT_TOLERANCE = 0.01  # as GrowthBook; a catalog whose weights miss 1 by more is refused
# Joins catalog keys into composite keys (state tables, search outbox): KEY_PATTERN excludes it.
KEY_SEP = "\x1f"


class CatalogError(ValueError):
    """An invalid catalog; the message gives the path of each bad field."""


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=KEY_PATTERN)
    kind: MetricKind
    cap: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False)
    numerator: str | None = Field(default=None, pattern=KEY_PATTERN)
    denominator: str | None = Field(default=None, pattern=KEY_PATTERN)
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _ratio_parts(self) -> Metric:
        if self.kind == "ratio":
            if not self.numerator or not self.denominator:
                raise ValueError("a ratio metric needs numerator and denominator")
            if self.cap is not None:
                raise ValueError("cap: a ratio is capped through its numerator and denominator")
        elif self.numerator or self.denominator:
            raise ValueError("numerator/denominator: only for kind ratio")
        return self


class Flag(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=KEY_PATTERN)
    enabled: bool = True
    rollout: float = Field(default=1.0, ge=0, le=1)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=KEY_PATTERN)
    weight: float = Field(ge=0, le=1)


class Guardrail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(pattern=KEY_PATTERN)
    bad_direction: Literal["increase", "decrease"]
    margin: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)
    min_users: int = Field(default=100, ge=2, le=MAX_MIN_USERS)
    action: Literal["rollback", "alert"] = "rollback"


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=KEY_PATTERN)
    flag: str | None = Field(default=None, pattern=KEY_PATTERN)
    seed: str | None = Field(default=None, max_length=256)
    hash_version: Literal[1, 2] = 2
    coverage: float = Field(default=1.0, ge=0, le=1)
    control: str = Field(pattern=KEY_PATTERN)
    variants: tuple[Variant, ...] = Field(min_length=2, max_length=MAX_VARIANTS)
    metrics: tuple[str, ...] = Field(default=(), max_length=MAX_METRICS_PER_EXPERIMENT)
    guardrails: tuple[Guardrail, ...] = Field(default=(), max_length=MAX_METRICS_PER_EXPERIMENT)
    status: Literal["draft", "running", "stopped"] = "running"

    @field_validator("seed")
    @classmethod
    def _seed_text(cls, value: str | None) -> str | None:
        if value and not value.isprintable():  # NUL, control characters, lone surrogates
            raise ValueError("seed: printable text only")
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        keys = [v.key for v in self.variants]
        if len(set(keys)) != len(keys):
            raise ValueError(f"variants: duplicate keys in {keys}")
        total = sum(v.weight for v in self.variants)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"variants: weights sum to {total:g}; they must sum to 1 (±0.01)")
        if self.control not in keys:
            raise ValueError(f"control: {self.control!r} is not one of the variants {keys}")
        return self

    @property
    def hashing_seed(self) -> str:
        return self.seed or self.key

    @property
    def variant_keys(self) -> tuple[str, ...]:
        return tuple(v.key for v in self.variants)

    @property
    def analysed_metrics(self) -> tuple[str, ...]:
        """The experiment's metrics, then guardrail metrics not already listed."""
        guarded = (g.metric for g in self.guardrails)
        return tuple(dict.fromkeys((*self.metrics, *guarded)))


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: tuple[Metric, ...] = Field(default=(), max_length=1000)
    flags: tuple[Flag, ...] = Field(default=(), max_length=10_000)
    experiments: tuple[Experiment, ...] = Field(default=(), max_length=10_000)

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        metrics = {m.key: m for m in self.metrics}
        for kind, keys in (
            ("metrics", [m.key for m in self.metrics]),
            ("flags", [f.key for f in self.flags]),
            ("experiments", [e.key for e in self.experiments]),
        ):
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            if duplicates:
                raise ValueError(f"{kind}: duplicate keys {duplicates}")
        for i, metric in enumerate(self.metrics):
            if metric.kind != "ratio":
                continue
            for part in ("numerator", "denominator"):
                ref = getattr(metric, part)
                if ref not in metrics:
                    raise ValueError(f"metrics.{i}.{part}: unknown metric {ref!r}")
                if metrics[ref].kind == "ratio":
                    raise ValueError(f"metrics.{i}.{part}: {ref!r} is itself a ratio")
        flags = {f.key for f in self.flags}
        for i, experiment in enumerate(self.experiments):
            if experiment.flag is not None and experiment.flag not in flags:
                raise ValueError(f"experiments.{i}.flag: unknown flag {experiment.flag!r}")
            for j, key in enumerate(experiment.metrics):
                if key not in metrics:
                    raise ValueError(f"experiments.{i}.metrics.{j}: unknown metric {key!r}")
            for j, guardrail in enumerate(experiment.guardrails):
                if guardrail.metric not in metrics:
                    raise ValueError(
                        f"experiments.{i}.guardrails.{j}.metric: unknown metric "
                        f"{guardrail.metric!r}"
                    )
        return self

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)

    def experiment(self, key: str) -> Experiment:
        return next(e for e in self.experiments if e.key == key)


def parse_catalog(payload: Any) -> Catalog:
    try:
        return Catalog.model_validate(payload)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{path}: {message}" if path else message)
        raise CatalogError("; ".join(problems)) from None


def load_catalog_file(path: Path) -> Catalog:
    """Read a catalog from YAML or JSON; every problem is reported with its field path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: {exc.strerror}") from None
    try:
        payload = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from None
    if not isinstance(payload, dict):
        raise CatalogError(f"{path}: the catalog must be a mapping with metrics/flags/experiments")
    return parse_catalog(payload)
