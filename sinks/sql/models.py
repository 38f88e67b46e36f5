"""SQL tables (SQLAlchemy 2.0). Every change to them comes with an Alembic migration."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    func,
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
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    rollout: Mapped[float] = mapped_column(Float, default=1.0)
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rollback_reason: Mapped[str | None] = mapped_column(String(1000))


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
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class VariantRow(Base):
    __tablename__ = "variants"

    experiment: Mapped[str] = mapped_column(
        ForeignKey("experiments.key", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)


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


class WindowAggregateRow(Base):
    """A partition's absolute sufficient statistics for one window: replays overwrite."""

    __tablename__ = "window_aggregates"

    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant: Mapped[str] = mapped_column(String(128), primary_key=True)
    metric: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[float] = mapped_column(Float, default=0.0)
    sum: Mapped[float] = mapped_column(Float, default=0.0)
    sum_sq: Mapped[float] = mapped_column(Float, default=0.0)
    x_sum: Mapped[float] = mapped_column(Float, default=0.0)
    x_sum_sq: Mapped[float] = mapped_column(Float, default=0.0)
    xy_sum: Mapped[float] = mapped_column(Float, default=0.0)
    den_sum: Mapped[float] = mapped_column(Float, default=0.0)
    den_sum_sq: Mapped[float] = mapped_column(Float, default=0.0)
    num_den_sum: Mapped[float] = mapped_column(Float, default=0.0)
    # Offset in the partition of the last event that changed the row: older writes never win.
    source_offset: Mapped[int] = mapped_column(BigInteger, default=-1)


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
