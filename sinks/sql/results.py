"""Analyzer output: result history, the latest look per comparison, guardrail and SRM state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from sinks.sql.models import (
    AlertOutboxRow,
    AlertRow,
    AuditRow,
    FlagRow,
    GuardrailStateRow,
    LatestResultRow,
    ResultHistoryRow,
    SearchOutboxRow,
    SrmStateRow,
)
from sinks.sql.store import as_utc, insert_for, json_text, search_key
from stats.experiment_analysis import ComparisonKey, ComparisonResult


def running_min_p_values(engine: Engine) -> dict[ComparisonKey, float]:
    """The always-valid p-value of every comparison so far: where the next look continues."""
    query = select(
        LatestResultRow.experiment,
        LatestResultRow.metric,
        LatestResultRow.variant,
        LatestResultRow.sequential_p_value,
    ).where(LatestResultRow.sequential_p_value.is_not(None))
    with engine.connect() as conn:
        return {(e, m, v): float(p or 0.0) for e, m, v, p in conn.execute(query)}


LATEST_COLUMNS = ("looked_at", "sequential_p_value", "result")


@dataclass(frozen=True)
class HistoryRetention:
    """Every look of the last ``full_hours``; before that one look per ``every_seconds`` per
    comparison (the first of each such period), so the lift-over-time keeps its shape."""

    full_hours: float = 24.0
    every_seconds: float = 3600.0

    def period(self, moment: datetime) -> int:
        return int(moment.timestamp() // self.every_seconds)


def record_results(
    session: Session,
    results: Sequence[ComparisonResult],
    looked_at: datetime,
    search_outbox: bool = False,
    retention: HistoryRetention | None = None,
) -> None:
    """A look's history rows and latest view, one statement per table; history older than the
    retention's full window keeps one look per period. ``search_outbox`` queues both for
    OpenSearch."""
    retention = retention or HistoryRetention()
    if not results:
        return
    previous = {
        (e, m, v): as_utc(at)
        for e, m, v, at in session.execute(
            select(
                LatestResultRow.experiment,
                LatestResultRow.metric,
                LatestResultRow.variant,
                LatestResultRow.looked_at,
            )
        )
    }
    period = retention.period(looked_at)
    rows: list[dict[str, Any]] = []
    for result in results:
        key = (result.experiment, result.metric, result.variant)
        before = previous.get(key)
        rows.append(
            {
                "looked_at": looked_at,
                "experiment": key[0],
                "metric": key[1],
                "variant": key[2],
                "sequential_p_value": result.sequential_p_value,
                "result": result,  # a dataclass: orjson writes it as ``to_json`` would
                "kept": before is None or retention.period(before) != period,
            }
        )
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        ids = _copy_history(conn, rows)
    else:
        ids = _insert_history(conn, rows)
    session.execute(
        delete(ResultHistoryRow).where(
            ResultHistoryRow.looked_at < looked_at - timedelta(hours=retention.full_hours),
            ResultHistoryRow.kept.is_(False),
        )
    )
    if search_outbox:
        outbox = [
            {"kind": "result", "key": search_key(r.experiment, r.metric, r.variant)}
            for r in results
        ] + [{"kind": "history", "key": str(i)} for i in ids]
        session.execute(insert(SearchOutboxRow), outbox)


HISTORY_COLUMNS = ("id", "looked_at", "experiment", "metric", "variant", "sequential_p_value")


def _copy_history(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Postgres: the history rows by COPY under ids taken ahead, and the latest view upserted
    from them inside the server: parsing a multi-row VALUES statement of this size on the
    client cost more than the rest of a look."""
    ids = list(
        conn.scalars(
            text(
                "SELECT nextval(pg_get_serial_sequence('analysis_results', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": len(rows)},
        )
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    columns = ", ".join((*HISTORY_COLUMNS, "result", "kept"))
    with cursor.copy(f"COPY analysis_results ({columns}) FROM STDIN") as copy:
        for id_, row in zip(ids, rows, strict=True):
            copy.write_row(
                (
                    *(id_, *(row[name] for name in HISTORY_COLUMNS[1:])),
                    json_text(row["result"]),
                    row["kept"],
                )
            )
    conn.execute(
        text(
            "INSERT INTO latest_results (experiment, metric, variant, looked_at, "
            "sequential_p_value, result) "
            "SELECT experiment, metric, variant, looked_at, sequential_p_value, result "
            "FROM analysis_results WHERE id = ANY(:ids) "
            "ON CONFLICT (experiment, metric, variant) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in LATEST_COLUMNS)
        ),
        {"ids": ids},
    )
    return ids


def _insert_history(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Elsewhere (SQLite): with RETURNING, SQLAlchemy sends a many-row executemany as multi-row
    VALUES statements ("insertmanyvalues", compiled once)."""
    ids = list(conn.scalars(insert(ResultHistoryRow).returning(ResultHistoryRow.id), rows))
    latest = insert_for(conn, LatestResultRow)
    conn.execute(
        latest.on_conflict_do_update(
            index_elements=["experiment", "metric", "variant"],
            set_={name: latest.excluded[name] for name in LATEST_COLUMNS},
        ),
        [{k: v for k, v in row.items() if k != "kept"} for row in rows],
    )
    return ids


def latest_results(engine: Engine, experiment: str) -> list[dict[str, Any]]:
    query = select(LatestResultRow.result).where(LatestResultRow.experiment == experiment)
    with engine.connect() as conn:
        return [dict(result) for (result,) in conn.execute(query)]


def guardrail_actions(engine: Engine, experiment: str) -> dict[tuple[str, str], str]:
    """(metric, variant) → the action taken when the guardrail was breached."""
    query = select(
        GuardrailStateRow.metric, GuardrailStateRow.variant, GuardrailStateRow.action_taken
    ).where(GuardrailStateRow.experiment == experiment)
    with engine.connect() as conn:
        return {(m, v): a for m, v, a in conn.execute(query)}


def flag_rolled_back(engine: Engine, key: str) -> bool:
    with Session(engine) as session:
        flag = session.get(FlagRow, key)
        return flag is not None and flag.rolled_back_at is not None


def rolled_back_flags(engine: Engine) -> dict[str, datetime]:
    query = select(FlagRow.key, FlagRow.rolled_back_at).where(FlagRow.rolled_back_at.is_not(None))
    with engine.connect() as conn:
        return {key: at for key, at in conn.execute(query) if at is not None}


def reset_analysis_state(engine: Engine) -> None:
    """Forget looks, alerts, audit and rollbacks: for the demo's sandbox database only."""
    with engine.begin() as conn:
        for table in (
            AlertOutboxRow,
            AlertRow,
            AuditRow,
            ResultHistoryRow,
            LatestResultRow,
            GuardrailStateRow,
            SrmStateRow,
        ):
            conn.execute(delete(table))
        conn.execute(update(FlagRow).values(rolled_back_at=None, rollback_reason=None))


def srm_state(engine: Engine, experiment: str) -> dict[str, Any] | None:
    with Session(engine) as session:
        row = session.get(SrmStateRow, experiment)
        if row is None:
            return None
        return {"p_value": row.p_value, "mismatch": row.mismatch}


def status_badges(engine: Engine) -> dict[str, dict[str, Any]]:
    """Experiment → its SRM check and how many of its guardrails are breached, in two reads:
    the experiments list shows them all."""
    badges: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for experiment, status in conn.execute(
            select(GuardrailStateRow.experiment, GuardrailStateRow.status)
        ):
            badge = badges.setdefault(experiment, {"srm": None, "breached": 0, "guarded": 0})
            badge["guarded"] += 1
            badge["breached"] += status == "breached"
        for experiment, p_value, mismatch in conn.execute(
            select(SrmStateRow.experiment, SrmStateRow.p_value, SrmStateRow.mismatch)
        ):
            badge = badges.setdefault(experiment, {"srm": None, "breached": 0, "guarded": 0})
            badge["srm"] = {"p_value": p_value, "mismatch": mismatch}
    return badges


def guardrail_states(engine: Engine, experiment: str) -> list[dict[str, Any]]:
    query = (
        select(GuardrailStateRow)
        .where(GuardrailStateRow.experiment == experiment)
        .order_by(GuardrailStateRow.metric, GuardrailStateRow.variant)
    )
    with Session(engine) as session:
        return [
            {
                "metric": row.metric,
                "variant": row.variant,
                "status": row.status,
                "action_taken": row.action_taken,
                "breached_at": row.breached_at.isoformat() if row.breached_at else None,
                "alert_id": row.alert_id,
            }
            for row in session.scalars(query)
        ]


def last_look(engine: Engine, experiment: str) -> datetime | None:
    query = select(func.max(LatestResultRow.looked_at)).where(
        LatestResultRow.experiment == experiment
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()
