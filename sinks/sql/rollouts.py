"""Rollout schedules in the catalog (docs/design.md §18): each move — create, advance, release,
pause, resume, roll back — in the caller's transaction, after the catalog lock, with its audit
row; the schedule's experiment and its flag's rule are written as any catalog edit is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.catalog import Catalog, CatalogError, Experiment, Flag, parse_catalog
from config.lifecycle import transition
from config.rollouts import (
    RolloutIn,
    Stage,
    comparison,
    experiment_key,
    release_rule,
    stage_rule,
    with_rule,
)
from sinks.sql.audit import audit
from sinks.sql.models import RolloutRow
from sinks.sql.store import (
    as_utc,
    bump_catalog_version,
    read_catalog,
    write_experiment,
    write_flag,
)

ACTIVE = ("running", "paused")


class RolloutError(ValueError):
    """A move the schedule's state forbids (the API's 409), or an unknown schedule (404)."""

    def __init__(self, rule: str, message: str, status: int = 409) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule, self.status = rule, status


def rollout_public(row: RolloutRow) -> dict[str, Any]:
    definition = RolloutIn.model_validate(row.definition)
    return {
        "id": row.id,
        "flag": row.flag,
        "experiment": row.experiment,
        "state": row.state,
        "stage": row.stage,
        "percent": definition.stages[row.stage].percent,
        "stage_started_at": as_utc(row.stage_started_at).isoformat(),
        "created_at": as_utc(row.created_at).isoformat(),
        "finished_at": as_utc(row.finished_at).isoformat() if row.finished_at else None,
        "reason": row.reason,
        "old_value": row.old_value,
        "version": row.version,
        **definition.model_dump(mode="json"),
    }


def list_rollouts(session: Session) -> list[RolloutRow]:
    return list(session.scalars(select(RolloutRow).order_by(RolloutRow.id)))


def rollout_of_experiment(session: Session, experiment: str) -> RolloutRow | None:
    return session.scalars(select(RolloutRow).where(RolloutRow.experiment == experiment)).first()


def create_rollout(session: Session, rollout: RolloutIn, actor: str, now: datetime) -> RolloutRow:
    """The schedule at its first stage: the comparison experiment running at that percent and
    the flag's rule serving it."""
    bump_catalog_version(session)
    catalog = read_catalog(session)
    flag = next((f for f in catalog.flags if f.key == rollout.flag), None)
    if flag is None:
        raise RolloutError("flag", f"unknown flag {rollout.flag!r}", 422)
    busy = session.scalars(
        select(RolloutRow.id).where(RolloutRow.flag == flag.key, RolloutRow.state.in_(ACTIVE))
    ).first()
    if busy is not None:
        raise RolloutError(
            "one_rollout_per_flag", f"flag {flag.key!r} is already rolling out in schedule {busy}"
        )
    row = RolloutRow(
        flag=flag.key,
        definition=rollout.model_dump(mode="json"),
        old_value=flag.default,
        experiment="",
        state="running",
        stage=0,
        stage_started_at=now,
        created_at=now,
        version=1,
    )
    session.add(row)
    session.flush()  # the id names the experiment
    row.experiment = experiment_key(flag.key, row.id)
    experiment = comparison(
        rollout, row.id, flag.default, rollout.stages[0].percent, _metrics(rollout)
    ).model_copy(update={"started_at": now})
    _write(session, catalog, experiment, with_rule(flag, stage_rule(rollout, row.id), row.id))
    _audit(session, row, "rollout.create", None, actor, now)
    return row


def locked_rollout(session: Session, rollout_id: int) -> RolloutRow:
    """The schedule's row under the catalog lock, read fresh."""
    bump_catalog_version(session)
    row = session.get(RolloutRow, rollout_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise RolloutError("rollout_schedule", f"unknown rollout schedule {rollout_id}", 404)
    return row


def advance(session: Session, row: RolloutRow, actor: str, now: datetime, why: str) -> None:
    """The next stage: a larger comparison, or at 100% the release to everyone."""
    _require(row, ("running", "paused"), "advance")
    rollout = RolloutIn.model_validate(row.definition)
    before = rollout_public(row)
    catalog = read_catalog(session)
    experiment = catalog.experiment(row.experiment)
    flag = next(f for f in catalog.flags if f.key == row.flag)
    row.stage += 1
    row.stage_started_at = now
    stage: Stage = rollout.stages[row.stage]
    if stage.percent == 100:
        flag = with_rule(flag, release_rule(rollout, row.id), row.id)
        experiment = transition(experiment, "stop", now)
        row.state, row.finished_at, row.reason = "released", now, why
    else:
        experiment = experiment.model_copy(update={"coverage": min(1.0, stage.percent / 50)})
    _write(session, catalog, experiment, flag)
    row.version += 1
    _audit(
        session,
        row,
        "rollout.release" if row.state == "released" else "rollout.advance",
        before,
        actor,
        now,
        why,
    )


def roll_back(session: Session, row: RolloutRow, actor: str, now: datetime, reason: str) -> bool:
    """Everyone gets the old value again; False when the schedule had already ended."""
    if row.state not in ACTIVE:
        return False
    before = rollout_public(row)
    catalog = read_catalog(session)
    experiment = transition(catalog.experiment(row.experiment), "stop", now)
    flag = with_rule(next(f for f in catalog.flags if f.key == row.flag), None, row.id)
    _write(session, catalog, experiment, flag)
    row.state, row.finished_at, row.reason = "rolled_back", now, reason
    row.version += 1
    _audit(session, row, "rollout.rollback", before, actor, now, reason)
    return True


def set_paused(session: Session, row: RolloutRow, paused: bool, actor: str, now: datetime) -> None:
    """A paused schedule keeps serving its stage and does not advance by itself."""
    _require(row, ("running",) if paused else ("paused",), "pause" if paused else "resume")
    before = rollout_public(row)
    row.state = "paused" if paused else "running"
    row.version += 1
    _audit(session, row, "rollout.pause" if paused else "rollout.resume", before, actor, now)


def _metrics(rollout: RolloutIn) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g.metric for g in rollout.guardrails))


def _require(row: RolloutRow, states: tuple[str, ...], action: str) -> None:
    if row.state not in states:
        raise RolloutError(
            f"{action}_when_{row.state}",
            f"{action} applies to a {' or '.join(states)} rollout schedule; "
            f"schedule {row.id} is {row.state}",
        )


def _write(session: Session, catalog: Catalog, experiment: Experiment, flag: Flag) -> None:
    """The experiment and flag as the whole catalog validates them (a value of the wrong type
    for the flag, an unknown guardrail metric: 422)."""
    document = catalog.model_dump(mode="json")
    document["experiments"] = [e for e in document["experiments"] if e["key"] != experiment.key] + [
        experiment.model_dump(mode="json")
    ]
    document["flags"] = [
        flag.model_dump(mode="json") if f["key"] == flag.key else f for f in document["flags"]
    ]
    try:
        changed = parse_catalog(document)
    except CatalogError as exc:
        raise RolloutError("catalog", str(exc), 422) from None
    write_flag(session, next(f for f in changed.flags if f.key == flag.key))
    write_experiment(session, changed.experiment(experiment.key))


def _audit(
    session: Session,
    row: RolloutRow,
    action: str,
    before: dict[str, Any] | None,
    actor: str,
    now: datetime,
    why: str | None = None,
) -> None:
    session.flush()
    after = rollout_public(row) | ({"why": why} if why else {})
    audit(
        session,
        at=now,
        actor=actor,
        action=action,
        entity_type="rollout",
        entity_key=str(row.id),
        before=before,
        after=after,
    )
