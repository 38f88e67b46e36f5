"""Request and response bodies of the HTTP API: create bodies are the catalog's own models;
updates and public views are their own schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from config.catalog import MAX_RULES, Experiment, FlagType, Guardrail, Variant, utc_time

UserId = Field(min_length=1, max_length=256)


class Assignment(BaseModel):
    experiment: str
    in_experiment: bool
    variant: str
    hash_version: int
    # assigned | not_in_coverage | not_running | paused | flag_rolled_back | flag_disabled
    reason: str


class UserAssignments(BaseModel):
    user_id: str
    assignments: list[Assignment]


class BatchAssignmentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[str] = Field(min_length=1, max_length=1000)
    experiment: str | None = Field(default=None, min_length=1, max_length=128)


class BatchAssignmentsOut(BaseModel):
    assignments: list[UserAssignments]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(min_length=1, max_length=1000)


class RejectedEvent(BaseModel):
    index: int
    reason: str
    detail: str


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    rejections: list[RejectedEvent]


class FlagPublic(BaseModel):
    key: str
    type: str
    default: Any
    enabled: bool
    rules: list[dict[str, Any]]
    rolled_back: bool
    rolled_back_at: str | None
    rollback_reason: str | None
    version: int  # also the ETag; send it back as If-Match to update


class FlagUpdate(BaseModel):
    """The fields a PUT changes; the ones left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None  # may be given; must then be the path's
    type: FlagType | None = None
    default: Any = None
    enabled: bool | None = None
    rules: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_RULES)


class ExperimentPublic(Experiment):
    version: int  # also the ETag; send it back as If-Match to update


class ExperimentUpdate(BaseModel):
    """The fields a PUT changes; the ones left out keep their value (checked with the rest)."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None  # may be given; must then be the path's
    flag: str | None = None
    seed: str | None = None
    hash_version: Literal[1, 2] | None = None
    coverage: float | None = Field(default=None, ge=0, le=1)
    control: str | None = None
    variants: tuple[Variant, ...] | None = Field(default=None, min_length=2)
    metrics: tuple[str, ...] | None = None
    guardrails: tuple[Guardrail, ...] | None = None


class ScheduleIn(BaseModel):
    """When the scheduler starts (or resumes) and stops the experiment; null clears a time."""

    model_config = ConfigDict(extra="forbid")

    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None

    @field_validator("start_at", "end_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc_time(value)


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="rolled back by hand", min_length=1, max_length=1000)


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["client", "sdk", "viewer", "analyst", "developer", "admin"]
    name: str = Field(default="", max_length=128)


class KeyOut(BaseModel):
    key_id: str
    role: str
    name: str
    token: str  # shown once


class Report(BaseModel):
    experiment: str
    status: str
    started_at: datetime | None
    stopped_at: datetime | None
    start_at: datetime | None
    end_at: datetime | None
    looked_at: str | None
    results: list[dict[str, Any]]
    srm: dict[str, Any] | None
    guardrails: list[dict[str, Any]]
    flag: FlagPublic | None
    counters: dict[str, int]


class WindowPoint(BaseModel):
    variant: str
    metric: str
    window_start: int
    n: float
    mean: float | None
    variance: float | None
    sums: dict[str, float]


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict, max_length=1000)
    flags: list[str] | None = Field(default=None, max_length=1000)  # default: every flag


class EvaluateItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict, max_length=1000)


class EvaluateBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[EvaluateItem] = Field(min_length=1, max_length=1000)
    flags: list[str] | None = Field(default=None, max_length=1000)


class FlagValueOut(BaseModel):
    value: Any
    source: str  # rule | experiment | rollout | default | disabled | rolled_back
    rule_id: str | None
    experiment: str | None
    variant: str | None
    in_experiment: bool


class UserFlags(BaseModel):
    user_id: str
    flags: dict[str, FlagValueOut]


class EvaluateBatchOut(BaseModel):
    results: list[UserFlags]
