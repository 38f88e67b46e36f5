"""Rollout schedules and safety settings over HTTP: each move in one transaction through
:mod:`sinks.sql.rollouts`; a move the schedule's state forbids answers 409 naming the rule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import HTTPException
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from api.auth import Caller
from config.rollouts import RolloutIn
from config.safety import SafetySettings
from sinks.sql.alerts import list_alerts
from sinks.sql.audit import audit
from sinks.sql.models import GuardrailStateRow, RolloutRow
from sinks.sql.rollouts import (
    RolloutError,
    advance,
    create_rollout,
    list_rollouts,
    locked_rollout,
    roll_back,
    rollout_public,
    set_paused,
)
from sinks.sql.store import as_utc, bump_catalog_version, read_catalog, read_safety, write_safety

Move = Literal["advance", "pause", "resume", "rollback"]


def _http(error: RolloutError) -> HTTPException:
    return HTTPException(error.status, str(error))


def create(engine: Engine, caller: Caller, body: RolloutIn) -> dict[str, Any]:
    try:
        with Session(engine) as session, session.begin():
            row = create_rollout(session, body, caller.actor, datetime.now(UTC))
            return rollout_public(row)
    except RolloutError as exc:
        raise _http(exc) from None


def public(engine: Engine, rollout_id: int) -> dict[str, Any]:
    with Session(engine) as session:
        row = session.get(RolloutRow, rollout_id)
        if row is None:
            raise HTTPException(404, f"rollout_schedule: unknown rollout schedule {rollout_id}")
        return _with_guardrails(session, row)


def listing(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        return [_with_guardrails(session, row) for row in list_rollouts(session)]


def move(
    engine: Engine, caller: Caller, rollout_id: int, action: Move, reason: str
) -> dict[str, Any]:
    now = datetime.now(UTC)
    steps: dict[Move, Callable[[Session, RolloutRow], Any]] = {
        "advance": lambda s, r: advance(s, r, caller.actor, now, f"advanced by {caller.actor}"),
        "pause": lambda s, r: set_paused(s, r, True, caller.actor, now),
        "resume": lambda s, r: set_paused(s, r, False, caller.actor, now),
        "rollback": lambda s, r: _manual_rollback(s, r, caller.actor, now, reason),
    }
    try:
        with Session(engine) as session, session.begin():
            row = locked_rollout(session, rollout_id)
            steps[action](session, row)
            return rollout_public(row)
    except RolloutError as exc:
        raise _http(exc) from None


def _manual_rollback(
    session: Session, row: RolloutRow, actor: str, now: datetime, reason: str
) -> None:
    if not roll_back(session, row, actor, now, reason):
        raise RolloutError(
            f"rollback_when_{row.state}",
            f"rollback applies to a running or paused rollout schedule; schedule {row.id} is "
            f"{row.state}",
        )


def _with_guardrails(session: Session, row: RolloutRow) -> dict[str, Any]:
    states = session.scalars(
        select(GuardrailStateRow).where(GuardrailStateRow.experiment == row.experiment)
    )
    return rollout_public(row) | {
        "guardrail_states": [
            {
                "metric": g.metric,
                "variant": g.variant,
                "status": g.status,
                "breached_at": as_utc(g.breached_at).isoformat() if g.breached_at else None,
                "action_taken": g.action_taken,
            }
            for g in states
        ]
    }


def safety_settings(engine: Engine) -> SafetySettings:
    with Session(engine) as session:
        return read_safety(session)


def put_safety_settings(engine: Engine, caller: Caller, body: SafetySettings) -> SafetySettings:
    """Checked against the catalog (metrics and flags it names must exist); audited."""
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        bump_catalog_version(session)  # the pipeline and analyzer act on the settings
        problems = body.problems(read_catalog(session))
        if problems:
            raise HTTPException(422, "; ".join(problems))
        before = read_safety(session).model_dump(mode="json")
        write_safety(session, body, now)
        audit(
            session,
            at=now,
            actor=caller.actor,
            action="safety.update",
            entity_type="safety",
            entity_key="settings",
            before=before,
            after=body.model_dump(mode="json"),
        )
    return body


def safety_report(engine: Engine) -> dict[str, Any]:
    """Rollbacks with the alert that decided them, breaches not acted on, rollouts under way."""
    alerts = [a for a in list_alerts(engine) if a["kind"] == "guardrail_breach"]
    with Session(engine) as session:
        rollouts = [_with_guardrails(session, row) for row in list_rollouts(session)]
    return {
        "rollbacks": [a for a in alerts if a["action_taken"] == "rollback"],
        "open_breaches": [a for a in alerts if a["action_taken"] != "rollback"],
        "rollouts_in_progress": [r for r in rollouts if r["state"] in ("running", "paused")],
        "rolled_back_rollouts": [r for r in rollouts if r["state"] == "rolled_back"],
    }
