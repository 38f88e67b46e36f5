"""Reads and idempotent upserts on Postgres and SQLite alike."""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError
from sqlalchemy.orm import Session

from config.catalog import KEY_SEP, Catalog, Experiment, Flag, Guardrail, Metric, Variant
from config.safety import SafetySettings
from sinks.sql.models import (
    CatalogStateRow,
    CounterRow,
    CumulativeAggregateRow,
    ExperimentRow,
    FlagRow,
    GuardrailRow,
    MetricRow,
    PartitionOffsetRow,
    SafetySettingsRow,
    SavedGroupRow,
    SearchOutboxRow,
    VariantRow,
    WindowAggregateRow,
)
from stats.sufficient import STATISTICS


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()  # JSON columns: a look writes thousands of documents


def make_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url, connect_args={"timeout": 30}, json_serializer=json_text
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the flushing worker
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(database_url, pool_pre_ping=True, json_serializer=json_text)


def unavailable(error: BaseException) -> bool:
    """The database cannot be reached or is busy (retry later), as opposed to a statement that
    fails: psycopg's OperationalError is about the connection; SQLite's only when locked."""
    orig = getattr(error, "orig", None)
    if isinstance(error, InterfaceError) or getattr(error, "connection_invalidated", False):
        return True
    if isinstance(orig, psycopg.OperationalError):
        return True
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


def insert_for(engine: Engine | Connection, table: Any) -> Any:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


# --- catalog -------------------------------------------------------------------------------


def save_catalog(engine: Engine, catalog: Catalog) -> None:
    """Upsert the whole catalog in one transaction: nothing is half-loaded."""
    with Session(engine) as session, session.begin():
        bump_catalog_version(session)
        write_catalog(session, catalog)


def bump_catalog_version(session: Session) -> int:
    """Take the catalog's write lock (a row lock on Postgres, the write lock on SQLite) as the
    transaction's first statement and bump its version: catalog changes run one at a time, and
    each reads what the one before committed. Returns the new version."""
    version = session.execute(
        update(CatalogStateRow)
        .where(CatalogStateRow.id == 1)
        .values(version=CatalogStateRow.version + 1, updated_at=datetime.now(UTC))
        .returning(CatalogStateRow.version)
    ).scalar_one()
    return int(version)


def catalog_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(CatalogStateRow.version)).scalar_one())


def write_catalog(session: Session, catalog: Catalog) -> None:
    """Upsert every metric, flag and experiment of ``catalog`` in the caller's transaction."""
    for metric in catalog.metrics:
        write_metric(session, metric)
    for flag in catalog.flags:
        write_flag(session, flag)
    for experiment in catalog.experiments:
        write_experiment(session, experiment)
    write_saved_groups(session, catalog.saved_groups)


def write_metric(session: Session, metric: Metric) -> None:
    session.merge(MetricRow(**metric.model_dump()))


VersionedRow = TypeVar("VersionedRow", FlagRow, ExperimentRow)


def _versioned(session: Session, model: type[VersionedRow], key: str) -> VersionedRow:
    """The row of ``key``, new at version 1 or the stored one a version further."""
    row = session.get(model, key)
    if row is None:
        row = model(key=key, version=1)
        session.add(row)
    else:
        row.version += 1
    return row


def write_flag(session: Session, flag: Flag) -> FlagRow:
    """Insert or update; a rollback stays in force (only a person restores a flag)."""
    row = _versioned(session, FlagRow, flag.key)
    row.type, row.default_value, row.enabled = flag.type, flag.default, flag.enabled
    row.rules = [rule.model_dump(mode="json", exclude_none=True) for rule in flag.rules]
    session.flush()
    return row


def write_saved_groups(session: Session, groups: dict[str, list[Any]]) -> None:
    """The catalog's saved groups, replacing those stored."""
    session.execute(delete(SavedGroupRow))
    session.add_all(SavedGroupRow(key=key, values=values) for key, values in groups.items())


def write_experiment(session: Session, experiment: Experiment) -> ExperimentRow:
    row = _versioned(session, ExperimentRow, experiment.key)
    row.flag, row.seed, row.hash_version = experiment.flag, experiment.seed, experiment.hash_version
    row.coverage, row.control, row.status = (
        experiment.coverage,
        experiment.control,
        experiment.status,
    )
    row.metrics = list(experiment.metrics)
    row.start_at, row.end_at = experiment.start_at, experiment.end_at
    row.started_at, row.stopped_at = experiment.started_at, experiment.stopped_at
    session.execute(delete(VariantRow).where(VariantRow.experiment == experiment.key))
    session.execute(delete(GuardrailRow).where(GuardrailRow.experiment == experiment.key))
    session.flush()
    for position, variant in enumerate(experiment.variants):
        session.add(
            VariantRow(
                experiment=experiment.key,
                key=variant.key,
                weight=variant.weight,
                position=position,
                value=variant.value,
            )
        )
    for guardrail in experiment.guardrails:
        session.add(GuardrailRow(experiment=experiment.key, **guardrail.model_dump()))
    session.flush()
    return row


def load_catalog(engine: Engine) -> Catalog:
    with Session(engine) as session:
        return read_catalog(session)


_EFFECTIVE: weakref.WeakKeyDictionary[Engine, tuple[int, Catalog]] = weakref.WeakKeyDictionary()


def load_effective_catalog(engine: Engine) -> Catalog:
    """The catalog as the pipeline, the analyzer and the scheduler act on it: with the safety
    settings' guardrails on every experiment that has a flag. Parsed again only when its
    version moved (every catalog write bumps it): a thousand experiments take 0.3 s to read."""
    with Session(engine) as session:
        version = session.scalar(select(CatalogStateRow.version))
        cached = _EFFECTIVE.get(engine)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        catalog = read_safety(session).applied(read_catalog(session))
    if version is not None:
        _EFFECTIVE[engine] = (version, catalog)
    return catalog


def read_safety(session: Session) -> SafetySettings:
    row = session.get(SafetySettingsRow, 1)
    if row is None:
        return SafetySettings()
    return SafetySettings.model_validate({"guardrails": row.guardrails, "flags": row.flags})


def write_safety(session: Session, settings: SafetySettings, at: datetime) -> None:
    row = session.get(SafetySettingsRow, 1)
    if row is None:
        row = SafetySettingsRow(id=1)
        session.add(row)
    document = settings.model_dump(mode="json")
    row.guardrails, row.flags, row.updated_at = document["guardrails"], document["flags"], at


def read_catalog(session: Session) -> Catalog:
    metrics = [
        Metric(
            key=r.key,
            kind=r.kind,
            cap=r.cap,
            numerator=r.numerator,
            denominator=r.denominator,
            higher_is_better=r.higher_is_better,
        )
        for r in session.scalars(select(MetricRow).order_by(MetricRow.key))
    ]
    flags = [
        Flag(key=r.key, type=r.type, default=r.default_value, enabled=r.enabled, rules=r.rules)
        for r in session.scalars(select(FlagRow).order_by(FlagRow.key))
    ]
    variants: dict[str, list[Variant]] = {}
    for row in session.scalars(select(VariantRow).order_by(VariantRow.position)):
        variants.setdefault(row.experiment, []).append(
            Variant(key=row.key, weight=row.weight, value=row.value)
        )
    guardrails: dict[str, list[Guardrail]] = {}
    for g in session.scalars(select(GuardrailRow).order_by(GuardrailRow.metric)):
        guardrails.setdefault(g.experiment, []).append(
            Guardrail(
                metric=g.metric,
                bad_direction=g.bad_direction,
                margin=g.margin,
                min_users=g.min_users,
                action=g.action,
            )
        )
    experiments = [
        Experiment(
            key=r.key,
            flag=r.flag,
            seed=r.seed,
            hash_version=r.hash_version,
            coverage=r.coverage,
            control=r.control,
            metrics=tuple(r.metrics),
            status=r.status,
            start_at=_utc(r.start_at),
            end_at=_utc(r.end_at),
            started_at=_utc(r.started_at),
            stopped_at=_utc(r.stopped_at),
            variants=tuple(variants.get(r.key, ())),
            guardrails=tuple(guardrails.get(r.key, ())),
        )
        for r in session.scalars(select(ExperimentRow).order_by(ExperimentRow.key))
    ]
    groups = {row.key: row.values for row in session.scalars(select(SavedGroupRow))}
    return Catalog(
        metrics=tuple(metrics),
        flags=tuple(flags),
        experiments=tuple(experiments),
        saved_groups=groups,
    )


def search_key(*parts: str) -> str:
    return KEY_SEP.join(parts)


# --- pipeline flushes ----------------------------------------------------------------------


def _upsert_newer(
    conn: Any,
    engine: Engine,
    table: Any,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    values: Sequence[str],
    offset_column: str,
) -> None:
    """Insert or overwrite ``values``, unless the stored row has a newer ``offset_column``."""
    if not rows:
        return
    stmt = insert_for(engine, table)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: stmt.excluded[name] for name in values},
            where=getattr(table, offset_column) <= stmt.excluded[offset_column],
        ),
        list(rows),
    )


def flush_partition_state(
    engine: Engine,
    windows: Sequence[dict[str, Any]],
    counters: Sequence[dict[str, Any]],
    offsets: Sequence[dict[str, Any]],
    search_outbox: bool = False,
    totals: Sequence[dict[str, Any]] = (),
) -> None:
    """Absolute values, upserted in one transaction; a row never goes back to an older offset.
    ``search_outbox`` queues the changed windows for OpenSearch in the same transaction."""
    with engine.begin() as conn:
        if search_outbox and windows:
            keys = {
                search_key(w["experiment"], w["variant"], w["metric"], str(int(w["window_start"])))
                for w in windows
            }
            conn.execute(
                insert(SearchOutboxRow), [{"kind": "window", "key": k} for k in sorted(keys)]
            )
        _upsert_newer(
            conn,
            engine,
            WindowAggregateRow,
            windows,
            ("experiment", "variant", "metric", "window_start", "partition"),
            (*STATISTICS, "source_offset"),
            "source_offset",
        )
        _upsert_newer(
            conn,
            engine,
            CumulativeAggregateRow,
            totals,
            ("experiment", "variant", "metric", "partition"),
            (*STATISTICS, "source_offset"),
            "source_offset",
        )
        _upsert_newer(
            conn,
            engine,
            CounterRow,
            counters,
            ("name", "key", "partition"),
            ("value", "source_offset"),
            "source_offset",
        )
        _upsert_newer(
            conn, engine, PartitionOffsetRow, offsets, ("topic", "partition"), ("offset",), "offset"
        )


def flushed_offsets(engine: Engine, topic: str) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(PartitionOffsetRow.partition, PartitionOffsetRow.offset).where(
                PartitionOffsetRow.topic == topic
            )
        )
        return {int(p): int(o) for p, o in rows}


# --- reads for analysis --------------------------------------------------------------------


def cumulative_arms(
    engine: Engine, experiments: Iterable[str] | None = None
) -> dict[tuple[str, str, str], dict[str, float]]:
    """(experiment, variant, metric) → its cumulative statistics: the partitions' totals, one
    row each, however many windows the experiment has run (docs/design.md §3)."""
    table = CumulativeAggregateRow
    columns = [func.sum(getattr(table, name)).label(name) for name in STATISTICS]
    query = select(table.experiment, table.variant, table.metric, *columns).group_by(
        table.experiment, table.variant, table.metric
    )
    if experiments is not None:
        query = query.where(table.experiment.in_(list(experiments)))
    with engine.connect() as conn:
        return {
            (experiment, variant, metric): dict(
                zip(STATISTICS, [float(value or 0.0) for value in values], strict=True)
            )
            for experiment, variant, metric, *values in conn.execute(query)
        }


def window_rows(engine: Engine, experiment: str) -> list[dict[str, Any]]:
    """Per-window statistics (summed over partitions), oldest first."""
    names = ("variant", "metric", "window_start", *STATISTICS)
    return [dict(zip(names, row, strict=True)) for row in window_sums(engine, experiment)]


def window_sums(engine: Engine, experiment: str, points: int | None = None) -> list[Any]:
    """(variant, metric, window_start, *STATISTICS) per window summed over partitions, oldest
    first. With ``points``, windows are summed into at most about that many periods of equal
    length, each labelled by its last window: a chart's resolution, at a fraction of the rows."""
    table = WindowAggregateRow
    start: Any = table.window_start
    if points is not None:
        with engine.connect() as conn:
            first, last = conn.execute(
                select(func.min(start), func.max(start)).where(table.experiment == experiment)
            ).one()
        every = -(-(int(last or 0) - int(first or 0) + 1) // points)  # ceiling division
        if every > 1:
            start = start - (start - int(first)) % every
    query = (
        select(table.variant, table.metric, func.max(table.window_start))
        .add_columns(*(func.sum(getattr(table, name)) for name in STATISTICS))
        .where(table.experiment == experiment)
        .group_by(table.variant, table.metric, start)
        .order_by(func.max(table.window_start))
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def counter_totals(engine: Engine, name: str) -> dict[str, float]:
    query = (
        select(CounterRow.key, func.sum(CounterRow.value))
        .where(CounterRow.name == name)
        .group_by(CounterRow.key)
    )
    with engine.connect() as conn:
        return {key: float(value) for key, value in conn.execute(query)}


def reset_pipeline_state(engine: Engine) -> None:
    """Forget all pipeline output (aggregates, counters, offsets); the catalog stays."""
    with engine.begin() as conn:
        for table in (WindowAggregateRow, CumulativeAggregateRow, CounterRow, PartitionOffsetRow):
            conn.execute(delete(table))
