"""The catalog: metrics, flags and experiments with their guardrails (docs/design.md §9)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from config.conditions import condition_errors

MetricKind = Literal["sum", "count", "conversion", "ratio"]
ExperimentStatus = Literal["draft", "scheduled", "running", "paused", "stopped"]
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_VARIANTS = 100
MAX_RULES = 100
MAX_VALUE_BYTES = 16 * 1024
MAX_METRICS_PER_EXPERIMENT = 100
MAX_MIN_USERS = 10**9
WEIGHT_TOLERANCE = 0.01  # as GrowthBook; a catalog whose weights miss 1 by more is refused
# Joins catalog keys into composite keys (state tables, search outbox): KEY_PATTERN excludes it.
KEY_SEP = "\x1f"


def utc_time(value: datetime | None) -> datetime | None:
    """A schedule's time in UTC; one without an offset, or beyond the years 1970-9999, is
    refused."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("a time with its UTC offset (e.g. 2026-01-31T09:00:00Z)")
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        moment = None
    if moment is None or not 1970 <= moment.year <= 9999:
        raise ValueError("a time between the years 1970 and 9999")
    return moment


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


FlagType = Literal["boolean", "string", "number", "json"]
RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ZERO_VALUES: dict[str, Any] = {"boolean": False, "string": "", "number": 0, "json": None}


def value_error(flag_type: str, value: Any) -> str | None:
    """Why ``value`` cannot be served by a flag of ``flag_type``; None when it can."""
    if flag_type == "boolean" and not isinstance(value, bool):
        return f"a boolean flag serves true or false, not {value!r:.40}"
    if flag_type == "string" and not isinstance(value, str):
        return f"a string flag serves strings, not {value!r:.40}"
    if flag_type == "number" and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        return f"a number flag serves finite numbers, not {value!r:.40}"
    if len(json.dumps(value, default=str)) > MAX_VALUE_BYTES:
        return f"a value is at most {MAX_VALUE_BYTES} bytes of JSON"
    return None


class ForceRule(BaseModel):
    """Serves ``value`` where ``condition`` holds and, with ``rollout``, to the users whose hash
    (version 2, seed the flag key, of ``hash_attribute``) lies in ``[0, rollout)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=RULE_ID_PATTERN)
    condition: dict[str, Any] | None = None
    value: Any
    rollout: float | None = Field(default=None, ge=0, le=1)
    hash_attribute: str = Field(default="id", min_length=1, max_length=128)


class ExperimentRule(BaseModel):
    """Serves the value of the user's variant of a running ``experiment``; a user outside its
    coverage falls through to the next rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=RULE_ID_PATTERN)
    experiment: str = Field(pattern=KEY_PATTERN)
    condition: dict[str, Any] | None = None


def _rule_kind(rule: Any) -> str:
    if isinstance(rule, ExperimentRule) or (isinstance(rule, dict) and "experiment" in rule):
        return "experiment"
    return "force"


Rule = Annotated[
    Annotated[ForceRule, Tag("force")] | Annotated[ExperimentRule, Tag("experiment")],
    Discriminator(_rule_kind),
]


class Flag(BaseModel):
    """A value apps ask for at run time. ``default`` is served when the flag is off, rolled back,
    or no rule applies; ``rules`` are tried in order (docs/design.md §16). The older form
    ``{key, enabled, rollout}`` still loads, as a boolean flag whose default is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=KEY_PATTERN)
    type: FlagType = "boolean"
    default: Any = None
    enabled: bool = True
    rules: tuple[Rule, ...] = Field(default=(), max_length=MAX_RULES)

    @model_validator(mode="before")
    @classmethod
    def _older_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        rollout = data.pop("rollout", None)  # never applied before flags had rules: dropped
        if rollout is not None and not (
            isinstance(rollout, int | float) and not isinstance(rollout, bool) and 0 <= rollout <= 1
        ):
            raise ValueError("rollout: a number from 0 to 1 (the older flag form)")
        if "type" not in data and "default" not in data:
            data["default"] = True  # the older form: a boolean flag, on unless disabled
        elif "default" not in data:
            data["default"] = ZERO_VALUES.get(str(data.get("type")))
        return data

    @model_validator(mode="after")
    def _values(self) -> Flag:
        problem = value_error(self.type, self.default)
        if problem:
            raise ValueError(f"default: {problem}")
        ids = [rule.id for rule in self.rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"rules: rule ids used twice: {duplicates}")
        for index, rule in enumerate(self.rules):
            if isinstance(rule, ForceRule):
                problem = (
                    "a rule serves a value (null is none)"
                    if rule.value is None
                    else value_error(self.type, rule.value)
                )
                if problem:
                    raise ValueError(f"rules.{index}.value: {problem}")
        return self


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=KEY_PATTERN)
    weight: float = Field(ge=0, le=1)
    value: Any = None  # what the experiment's flag serves in this arm (docs/design.md §16)


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
    status: ExperimentStatus = "running"
    # The schedule (UTC) the scheduler follows, and when the experiment did start and stop
    # (docs/design.md §17): exposures outside [started_at, stopped_at] are not counted.
    start_at: datetime | None = None
    end_at: datetime | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None

    @field_validator("start_at", "end_at", "started_at", "stopped_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc_time(value)

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
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at: must be after start_at")
        if self.status == "scheduled" and self.start_at is None:
            raise ValueError("start_at: a scheduled experiment needs a start_at")
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
    # Saved groups for $inGroup/$notInGroup: id → the attribute values in the group.
    saved_groups: dict[str, list[Any]] = Field(default_factory=dict, max_length=1000)

    @field_validator("saved_groups")
    @classmethod
    def _groups(cls, groups: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in groups.items():
            if not re.fullmatch(KEY_PATTERN, key):
                raise ValueError(f"saved_groups.{key}: a group id matches {KEY_PATTERN}")
            if len(values) > 100_000:
                raise ValueError(f"saved_groups.{key}: at most 100,000 values")
        return groups

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        metrics = {m.key: m for m in self.metrics}
        for kind, keys in (
            ("metrics", [m.key for m in self.metrics]),
            ("flags", [f.key for f in self.flags]),
            ("experiments", [e.key for e in self.experiments]),
        ):
            duplicates = sorted(k for k, times in Counter(keys).items() if times > 1)
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
        problems = self._flag_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _flag_problems(self) -> list[str]:
        """Rules against the rest of the catalog: conditions, experiments and their values."""
        problems: list[str] = []
        experiments = {e.key: e for e in self.experiments}
        flag_keys = {f.key for f in self.flags}
        for i, flag in enumerate(self.flags):
            for j, rule in enumerate(flag.rules):
                where = f"flags.{i}.rules.{j}"
                if rule.condition is not None:
                    problems += condition_errors(
                        rule.condition, f"{where}.condition", self.saved_groups
                    )
                if not isinstance(rule, ExperimentRule):
                    continue
                experiment = experiments.get(rule.experiment)
                if experiment is None:
                    problems.append(f"{where}.experiment: unknown experiment {rule.experiment!r}")
                    continue
                for k, variant in enumerate(experiment.variants):
                    problem = (
                        "has no value"
                        if variant.value is None and flag.type != "json"
                        else value_error(flag.type, variant.value)
                    )
                    if problem:
                        problems.append(
                            f"{where}.experiment: {rule.experiment!r} variant {variant.key!r} "
                            f"(experiments.{list(experiments).index(rule.experiment)}.variants."
                            f"{k}.value) {problem}"
                        )
        for i, experiment in enumerate(self.experiments):
            if experiment.flag is None and experiment.key in flag_keys:
                problems.append(
                    f"experiments.{i}.key: {experiment.key!r} is also a flag's key; an experiment "
                    "without a flag is served to SDKs as a feature of that key"
                )
        return problems

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
            relative = re.match(r"([A-Za-z_][\w.$]*): (.*)", message, flags=re.DOTALL)
            if path and relative and not relative[1].startswith(path):
                path, message = f"{path}.{relative[1]}", relative[2]  # a model's own field
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
