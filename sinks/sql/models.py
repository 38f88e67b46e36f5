"""SQL tables (SQLAlchemy 2.0). Every change to them comes with an Alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class MetricRow(Base):
    __tablename__ = "metrics"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    cap: Mapped[float | None] = mapped_column(Float)
    numerator: Mapped[str | None] = mapped_column(String(128))
    denominator: Mapped[str | None] = mapped_column(String(128))
    higher_is_better: Mapped[bool] = mapped_column(Boolean, default=True)


class FlagRow(Base):
    __tablename__ = "flags"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), default="boolean", server_default="boolean")
    default_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    rules: Mapped[list[Any]] = mapped_column(JSON, default=list)
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rollback_reason: Mapped[str | None] = mapped_column(String(1000))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class SavedGroupRow(Base):
    """A saved group of attribute values, for the $inGroup/$notInGroup operators."""

    __tablename__ = "saved_groups"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    values: Mapped[list[Any]] = mapped_column(JSON, default=list)


class CatalogStateRow(Base):
    """One row (id 1): every catalog change bumps ``version`` as its first statement, which
    serialises catalog edits and tells readers (SDK payloads, caches) that something changed."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExperimentRow(Base):
    __tablename__ = "experiments"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    flag: Mapped[str | None] = mapped_column(ForeignKey("flags.key"))
    seed: Mapped[str | None] = mapped_column(String(256))
    hash_version: Mapped[int] = mapped_column(Integer, default=2)
    coverage: Mapped[float] = mapped_column(Float, default=1.0)
    control: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="running")
    start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class RolloutRow(Base):
    """A rollout schedule: its definition, the stage it is at, and its experiment's key."""

    __tablename__ = "rollout_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flag: Mapped[str] = mapped_column(ForeignKey("flags.key"))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # config.rollouts.RolloutIn
    old_value: Mapped[Any] = mapped_column(JSON, nullable=True)  # what ``off`` keeps serving
    experiment: Mapped[str] = mapped_column(String(128), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(String(1000))
    version: Mapped[int] = mapped_column(Integer, default=1)


class SafetySettingsRow(Base):
    """One row (id 1): guardrails added to every rollout and every experiment with a flag, and
    per flag its own list instead."""

    __tablename__ = "safety_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guardrails: Mapped[list[Any]] = mapped_column(JSON, default=list)
    flags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VariantRow(Base):
    __tablename__ = "variants"

    experiment: Mapped[str] = mapped_column(
        ForeignKey("experiments.key", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)  # what the flag serves in this arm


class GuardrailRow(Base):
    __tablename__ = "guardrails"

    experiment: Mapped[str] = mapped_column(
        ForeignKey("experiments.key", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(String(128), primary_key=True)
    bad_direction: Mapped[str] = mapped_column(String(16))
    margin: Mapped[float] = mapped_column(Float, default=0.0)
    min_users: Mapped[int] = mapped_column(Integer, default=100)
    action: Mapped[str] = mapped_column(String(16), default="rollback")


class Statistics:
    """The nine sufficient statistics (``stats.sufficient.STATISTICS``), absolute, and the
    offset of the last event that changed them: older writes never win."""

    n: Mapped[float] = mapped_column(Float, default=0.0)
    sum: Mapped[float] = mapped_column(Float, default=0.0)
    sum_sq: Mapped[float] = mapped_column(Float, default=0.0)
    x_sum: Mapped[float] = mapped_column(Float, default=0.0)
    x_sum_sq: Mapped[float] = mapped_column(Float, default=0.0)
    xy_sum: Mapped[float] = mapped_column(Float, default=0.0)
    den_sum: Mapped[float] = mapped_column(Float, default=0.0)
    den_sum_sq: Mapped[float] = mapped_column(Float, default=0.0)
    num_den_sum: Mapped[float] = mapped_column(Float, default=0.0)
    source_offset: Mapped[int] = mapped_column(BigInteger, default=-1)


class WindowAggregateRow(Statistics, Base):
    """A partition's absolute sufficient statistics for one window: replays overwrite."""

    __tablename__ = "window_aggregates"

    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant: Mapped[str] = mapped_column(String(128), primary_key=True)
    metric: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)


class CumulativeAggregateRow(Statistics, Base):
    """A partition's absolute statistics over all its windows (the worker's totals): what the
    analyzer reads, one row per experiment, variant, metric and partition."""

    __tablename__ = "cumulative_aggregates"

    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant: Mapped[str] = mapped_column(String(128), primary_key=True)
    metric: Mapped[str] = mapped_column(String(128), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)


class CounterRow(Base):
    """Per-partition counters: users and crossovers per experiment, events by outcome."""

    __tablename__ = "pipeline_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    source_offset: Mapped[int] = mapped_column(BigInteger, default=-1)


class PartitionOffsetRow(Base):
    """The last offset whose effects are flushed, per source partition."""

    __tablename__ = "partition_offsets"

    topic: Mapped[str] = mapped_column(String(256), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)


class ResultHistoryRow(Base):
    """One row per comparison per look, thinned out as it ages (``HistoryRetention``)."""

    __tablename__ = "analysis_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    looked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    experiment: Mapped[str] = mapped_column(String(128), index=True)
    metric: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(128))
    sequential_p_value: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, object]] = mapped_column(JSON)
    # The comparison's first look of its retention period: kept once the full window passed.
    kept: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class LatestResultRow(Base):
    """The newest look per comparison; its sequential p-value is the running minimum."""

    __tablename__ = "latest_results"

    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    metric: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant: Mapped[str] = mapped_column(String(128), primary_key=True)
    looked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sequential_p_value: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, object]] = mapped_column(JSON)


class SrmStateRow(Base):
    """Latest SRM check per experiment; ``alert_open`` until the mismatch clears."""

    __tablename__ = "srm_states"

    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    looked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    p_value: Mapped[float | None] = mapped_column(Float)
    mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    alert_open: Mapped[bool] = mapped_column(Boolean, default=False)


class GuardrailStateRow(Base):
    """A guardrail's status per variant; once breached it stays breached (no re-alerting)."""

    __tablename__ = "guardrail_states"

    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    metric: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    # The look that set ``status``: rewriting a thousand unchanged rows each look costs 0.1 s.
    looked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    alert_id: Mapped[str | None] = mapped_column(String(36))
    action_taken: Mapped[str] = mapped_column(String(16), default="none")


class AlertRow(Base):
    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    experiment: Mapped[str] = mapped_column(String(128), index=True)
    flag: Mapped[str | None] = mapped_column(String(128))
    metric: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(128))
    action_taken: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    payload: Mapped[dict[str, object]] = mapped_column(JSON)


class AlertOutboxRow(Base):
    """Alerts waiting for Kafka: written in the transaction that decides them (outbox)."""

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.alert_id"), unique=True)
    key: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    sent_partition: Mapped[int | None] = mapped_column(Integer)
    sent_offset: Mapped[int | None] = mapped_column(BigInteger)


class AuditRow(Base):
    """Who changed what: before and after, for flags, experiments and keys."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_key: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, object] | None] = mapped_column(JSON)
    after: Mapped[dict[str, object] | None] = mapped_column(JSON)


class ApiKeyRow(Base):
    """An API key: only a SHA-256 of the secret is kept; ``key_id`` is its public prefix."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    # A client key's AES-128 key (base64) when its SDK payload is served encrypted.
    payload_key: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KinesisShardRow(Base):
    """A Kinesis shard's checkpoint and lease, as the Kinesis Client Library keeps them in
    DynamoDB: one owner at a time, a lease that expires when its owner stops renewing it."""

    __tablename__ = "kinesis_shards"

    stream: Mapped[str] = mapped_column(String(128), primary_key=True)
    shard_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    checkpoint: Mapped[str | None] = mapped_column(String(128))  # last forwarded sequence number
    finished: Mapped[bool] = mapped_column(Boolean, default=False)  # read to its end (closed)
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds


class LeaseRow(Base):
    """The lease of a singleton role (analyzer, scheduler, publisher, shipper): who leads, until
    when (epoch seconds)."""

    __tablename__ = "leases"

    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


class SearchOutboxRow(Base):
    """A document OpenSearch must (re)receive: its kind and key. The body is built from SQL when
    it is sent, so a key queued twice sends the newest state once; rows leave after the ack."""

    __tablename__ = "search_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # window | result | history | alert
    key: Mapped[str] = mapped_column(String(600))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(String(2000))
