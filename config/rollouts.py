"""Rollout schedules (docs/design.md §18): a flag's new value released in stages, each stage
compared against the old value as an experiment ``rollout:<flag>:<id>`` whose arms never lose a
user as the stage grows. Pure: the models and what a schedule puts into the catalog."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.catalog import (
    KEY_PATTERN,
    MAX_MIN_USERS,
    Experiment,
    ExperimentRule,
    Flag,
    ForceRule,
    Guardrail,
    Variant,
    utc_time,
)

Trigger = Literal["time", "metric", "manual"]
RolloutState = Literal["running", "paused", "released", "rolled_back"]
MAX_STAGES = 20
MONITORED_MAX = 50.0  # above this the two equal arms could not both grow: only 100 (release)
OFF, ON = "off", "on"


class Stage(BaseModel):
    """``percent`` of users get the new value (and as many keep the old one, compared) until
    the trigger lets the next stage begin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    percent: float = Field(gt=0, le=100, allow_inf_nan=False)
    trigger: Trigger = "metric"
    min_duration_seconds: float = Field(default=0, ge=0, le=365 * 86400, allow_inf_nan=False)
    at: datetime | None = None
    min_users: int = Field(default=100, ge=0, le=MAX_MIN_USERS)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc_time(value)

    @model_validator(mode="after")
    def _monitored(self) -> Stage:
        if self.percent > MONITORED_MAX and self.percent != 100:
            raise ValueError(
                f"percent: {self.percent:g} is refused: above {MONITORED_MAX:g}% the arms "
                "compared cannot both grow (users would change arm); the stage after 50 is 100"
            )
        return self


class RolloutIn(BaseModel):
    """A rollout schedule as created (``POST /v1/rollout-schedules``, ``rollouts create``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: str = Field(pattern=KEY_PATTERN, max_length=96)  # room for "rollout:<flag>:<id>"
    value: Any
    condition: dict[str, Any] | None = None
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=MAX_STAGES)
    guardrails: tuple[Guardrail, ...] = Field(default=(), max_length=100)

    @model_validator(mode="after")
    def _stages(self) -> RolloutIn:
        percents = [s.percent for s in self.stages]
        if any(b <= a for a, b in pairwise(percents)):
            raise ValueError(f"stages: percents must grow, not {percents}")
        if percents[-1] != 100:
            raise ValueError("stages: the last stage is 100 (the release)")
        if len(percents) < 2:
            raise ValueError("stages: at least one monitored stage (≤ 50%) comes before 100")
        return self


def experiment_key(flag: str, rollout_id: int) -> str:
    return f"rollout:{flag}:{rollout_id}"


def rule_id(rollout_id: int) -> str:
    return f"rollout-{rollout_id}"


def comparison(
    rollout: RolloutIn, rollout_id: int, old_value: Any, percent: float, metrics: tuple[str, ...]
) -> Experiment:
    """The monitored stage as an experiment: ``off`` hashes into ``[0, p)``, ``on`` into
    ``[0.5, 0.5 + p)`` (coverage ``2p`` over two equal weights), so a growing ``p`` keeps
    every user in the arm it had."""
    key = experiment_key(rollout.flag, rollout_id)
    return Experiment(
        key=key,
        flag=rollout.flag,
        seed=key,
        coverage=min(1.0, 2 * percent / 100),
        control=OFF,
        variants=(
            Variant(key=OFF, weight=0.5, value=old_value),
            Variant(key=ON, weight=0.5, value=rollout.value),
        ),
        metrics=metrics,
        guardrails=rollout.guardrails,
        status="running",
    )


def with_rule(flag: Flag, rule: ExperimentRule | ForceRule | None, rollout_id: int) -> Flag:
    """The flag with the rollout's rule last (replacing the one it had): the users who reach
    it are the ones the flag's default served, so ``off`` is the value they had."""
    rules = tuple(r for r in flag.rules if r.id != rule_id(rollout_id))
    return flag.model_copy(update={"rules": rules + ((rule,) if rule is not None else ())})


def stage_rule(rollout: RolloutIn, rollout_id: int) -> ExperimentRule:
    return ExperimentRule(
        id=rule_id(rollout_id),
        experiment=experiment_key(rollout.flag, rollout_id),
        condition=rollout.condition,
    )


def release_rule(rollout: RolloutIn, rollout_id: int) -> ForceRule:
    return ForceRule(id=rule_id(rollout_id), value=rollout.value, condition=rollout.condition)
