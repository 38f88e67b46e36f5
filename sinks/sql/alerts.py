"""Alerts and their outbox: an alert row and its Kafka message are written in one transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from sinks.sql.models import AlertOutboxRow, AlertRow, SearchOutboxRow

ALERT_FIELDS: dict[str, Any] = {  # every alert carries these; null where one does not apply
    "metric": None,
    "variant": None,
    "rel_effect": None,
    "rel_ci": None,
    "margin": None,
    "sequential_p_value": None,
    "n_control": 0,
    "n_variant": 0,
    "action_taken": "none",
}
EXTRA_FIELDS = {"srm_p_value", "arm_sizes", "rollout_schedule", "stage"}  # SRM, rollouts only


def alert_payload(
    kind: str, experiment: str, flag: str | None, created_at: datetime, **fields: Any
) -> dict[str, Any]:
    """The published alert document (README, "Guardrail alerts"), with a new ``alert_id``."""
    unknown = set(fields) - set(ALERT_FIELDS) - EXTRA_FIELDS
    if unknown:
        raise TypeError(f"unknown alert fields: {sorted(unknown)}")
    return {
        "alert_id": str(uuid.uuid4()),
        "kind": kind,
        "experiment": experiment,
        "flag": flag,
        **ALERT_FIELDS,
        **{k: v for k, v in fields.items() if k in ALERT_FIELDS},
        "created_at": created_at.isoformat(),
        **{k: v for k, v in fields.items() if k in EXTRA_FIELDS},
    }


def add_alert(
    session: Session, payload: dict[str, Any], created_at: datetime, search_outbox: bool = False
) -> None:
    """``payload`` is the published document (README, "Guardrail alerts")."""
    session.add(
        AlertRow(
            alert_id=payload["alert_id"],
            kind=payload["kind"],
            experiment=payload["experiment"],
            flag=payload["flag"],
            metric=payload["metric"],
            variant=payload["variant"],
            action_taken=payload["action_taken"],
            created_at=created_at,
            payload=payload,
        )
    )
    session.flush()  # the outbox row refers to the alert
    session.add(
        AlertOutboxRow(
            alert_id=payload["alert_id"],
            key=payload["flag"] or payload["experiment"],
            payload=orjson.dumps(payload).decode(),
            created_at=created_at,
        )
    )
    if search_outbox:
        session.add(SearchOutboxRow(kind="alert", key=payload["alert_id"]))


def list_alerts(engine: Engine, since: datetime | None = None) -> list[dict[str, Any]]:
    """Alert documents, newest first."""
    query = select(AlertRow.payload).order_by(AlertRow.created_at.desc(), AlertRow.alert_id)
    if since is not None:
        query = query.where(AlertRow.created_at >= since)
    with engine.connect() as conn:
        return [dict(payload) for (payload,) in conn.execute(query)]


def unsent(engine: Engine) -> list[AlertOutboxRow]:
    with Session(engine, expire_on_commit=False) as session:
        query = select(AlertOutboxRow).where(AlertOutboxRow.sent_at.is_(None))
        return list(session.scalars(query.order_by(AlertOutboxRow.id)))


def mark_sent(
    engine: Engine, alert_id: str, partition: int | None, offset: int | None, at: datetime
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(AlertOutboxRow)
            .where(AlertOutboxRow.alert_id == alert_id, AlertOutboxRow.sent_at.is_(None))
            .values(sent_at=at, sent_partition=partition, sent_offset=offset)
        )


def sent_high_water(engine: Engine) -> dict[int, int]:
    """Per partition, the highest offset known to hold one of our alerts."""
    query = (
        select(AlertOutboxRow.sent_partition, func.max(AlertOutboxRow.sent_offset))
        .where(AlertOutboxRow.sent_partition.is_not(None))
        .group_by(AlertOutboxRow.sent_partition)
    )
    with engine.connect() as conn:
        return {int(p or 0): int(o or 0) for p, o in conn.execute(query)}


def count_alerts(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AlertRow)).scalar() or 0)
