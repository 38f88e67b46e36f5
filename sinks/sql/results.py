"""Analyzer output: result history, the latest look per comparison, guardrail and SRM state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
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
from sinks.sql.store import search_key
from stats.experiment_analysis import ComparisonKey


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


def record_results(
    session: Session,
    results: list[dict[str, Any]],
    looked_at: datetime,
    search_outbox: bool = False,
) -> None:
    """History rows and the latest view; ``search_outbox`` queues both for OpenSearch."""
    history: list[ResultHistoryRow] = []
    for result in results:
        key = {
            "experiment": result["experiment"],
            "metric": result["metric"],
            "variant": result["variant"],
        }
        p_value = result["sequential_p_value"]
        session.add(
            ResultHistoryRow(looked_at=looked_at, sequential_p_value=p_value, result=result, **key)
        )
        session.merge(
            LatestResultRow(looked_at=looked_at, sequential_p_value=p_value, result=result, **key)
        )
        if search_outbox:
            session.add(
                SearchOutboxRow(
                    kind="result", key=search_key(key["experiment"], key["metric"], key["variant"])
                )
            )
    if search_outbox and history:
        session.flush()  # history ids are the keys of their documents
        session.add_all(SearchOutboxRow(kind="history", key=str(row.id)) for row in history)


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
