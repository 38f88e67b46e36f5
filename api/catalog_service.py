"""Catalog writes: each change in one transaction that takes the catalog lock first, reads the
catalog inside it, checks the entity's version against ``If-Match``, validates the whole catalog
with the change, writes only the changed entity and its audit row. Two edits never lose each
other; a stale ``If-Match`` changes nothing (412)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import HTTPException
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from api.auth import Caller
from api.schemas import ExperimentPublic, FlagPublic
from config.catalog import CatalogError, Experiment, Flag, parse_catalog
from config.lifecycle import Action, LifecycleError, edit_problem, schedule, transition
from sinks.sql.audit import audit, restore_flag, rollback_flag
from sinks.sql.models import ExperimentRow, FlagRow
from sinks.sql.store import as_utc, bump_catalog_version, read_catalog, write_experiment, write_flag

EntityType = Literal["experiment", "flag"]


def etag(version: int) -> str:
    return f'"{version}"'


def matches(if_match: str | None, version: int) -> bool:
    """RFC 9110 If-Match: absent or ``*`` matches; otherwise one of the listed entity tags."""
    if if_match is None or if_match.strip() == "*":
        return True
    tags = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    return etag(version) in tags


# --- reads -----------------------------------------------------------------------------------


def experiment_public(session: Session, key: str) -> ExperimentPublic:
    catalog = read_catalog(session)
    row = session.get(ExperimentRow, key)
    if row is None:
        raise HTTPException(404, f"experiment: unknown experiment {key!r}")
    return ExperimentPublic(**catalog.experiment(key).model_dump(), version=row.version)


def experiments_public(session: Session) -> list[ExperimentPublic]:
    versions = {
        key: version
        for key, version in session.execute(select(ExperimentRow.key, ExperimentRow.version))
    }
    return [
        ExperimentPublic(**e.model_dump(), version=versions[e.key])
        for e in read_catalog(session).experiments
    ]


def flag_public(row: FlagRow) -> FlagPublic:
    return FlagPublic(
        key=row.key,
        type=row.type,
        default=row.default_value,
        enabled=row.enabled,
        rules=row.rules,
        rolled_back=row.rolled_back_at is not None,
        rolled_back_at=as_utc(row.rolled_back_at).isoformat() if row.rolled_back_at else None,
        rollback_reason=row.rollback_reason,
        version=row.version,
    )


def flag_of(session: Session, key: str) -> FlagPublic:
    row = session.get(FlagRow, key)
    if row is None:
        raise HTTPException(404, f"flag: unknown flag {key!r}")
    return flag_public(row)


def flags_public(session: Session) -> list[FlagPublic]:
    return [flag_public(row) for row in session.scalars(select(FlagRow).order_by(FlagRow.key))]


# --- writes ----------------------------------------------------------------------------------


def create_experiment(engine: Engine, caller: Caller, body: Experiment) -> ExperimentPublic:
    if body.status == "running" and body.started_at is None:  # created running: starts now
        body = body.model_copy(update={"started_at": datetime.now(UTC)})
    _create(engine, caller, "experiment", body)
    with Session(engine) as session:
        return experiment_public(session, body.key)


def update_experiment(
    engine: Engine,
    caller: Caller,
    key: str,
    changes: dict[str, Any],
    if_match: str | None,
    verb: str = "update",
) -> ExperimentPublic:
    """``changes`` (fields of ``ExperimentUpdate``, JSON form) over the stored experiment."""
    _update(engine, caller, "experiment", key, changes, if_match, verb)
    with Session(engine) as session:
        return experiment_public(session, key)


def transition_experiment(
    engine: Engine, caller: Caller, key: str, action: Action, if_match: str | None
) -> ExperimentPublic:
    """Start, pause, resume or stop now; 409 naming the rule when the state forbids it."""
    now = datetime.now(UTC)
    _lifecycle(engine, caller, key, action, if_match, lambda e: transition(e, action, now))
    with Session(engine) as session:
        return experiment_public(session, key)


def schedule_experiment(
    engine: Engine,
    caller: Caller,
    key: str,
    start_at: datetime | None,
    end_at: datetime | None,
    if_match: str | None,
) -> ExperimentPublic:
    now = datetime.now(UTC)
    _lifecycle(
        engine, caller, key, "schedule", if_match, lambda e: schedule(e, start_at, end_at, now)
    )
    with Session(engine) as session:
        return experiment_public(session, key)


def _lifecycle(
    engine: Engine,
    caller: Caller,
    key: str,
    verb: str,
    if_match: str | None,
    move: Callable[[Experiment], Experiment],
) -> None:
    def change(document: dict[str, Any]) -> dict[str, Any]:
        before = next(item for item in document["experiments"] if item["key"] == key)
        try:
            after = move(Experiment.model_validate(before)).model_dump(mode="json")
        except LifecycleError as exc:
            raise HTTPException(409, str(exc)) from None
        document["experiments"] = [after if i["key"] == key else i for i in document["experiments"]]
        return after

    _edit(engine, caller, "experiment", key, f"experiment.{verb}", if_match, change, lifecycle=True)


def create_flag(engine: Engine, caller: Caller, body: Flag) -> FlagPublic:
    _create(engine, caller, "flag", body)
    with Session(engine) as session:
        return flag_of(session, body.key)


def update_flag(
    engine: Engine, caller: Caller, key: str, changes: dict[str, Any], if_match: str | None
) -> FlagPublic:
    _update(engine, caller, "flag", key, changes, if_match, "update")
    with Session(engine) as session:
        return flag_of(session, key)


def _create(
    engine: Engine, caller: Caller, entity_type: EntityType, body: Experiment | Flag
) -> None:
    collection = f"{entity_type}s"

    def change(document: dict[str, Any]) -> dict[str, Any]:
        if any(item["key"] == body.key for item in document[collection]):
            raise HTTPException(409, f"key: {entity_type} {body.key!r} exists; PUT to change it")
        after = body.model_dump(mode="json")
        document[collection].append(after)
        return after

    _edit(engine, caller, entity_type, body.key, f"{entity_type}.create", None, change)


def _update(
    engine: Engine,
    caller: Caller,
    entity_type: EntityType,
    key: str,
    changes: dict[str, Any],
    if_match: str | None,
    verb: str,
) -> None:
    collection = f"{entity_type}s"

    def change(document: dict[str, Any]) -> dict[str, Any]:
        after = {**next(item for item in document[collection] if item["key"] == key), **changes}
        document[collection] = [after if i["key"] == key else i for i in document[collection]]
        return after

    _edit(engine, caller, entity_type, key, f"{entity_type}.{verb}", if_match, change)


def set_rolled_back(
    engine: Engine, caller: Caller, key: str, reason: str | None, if_match: str | None
) -> FlagPublic:
    """Roll back (``reason`` given) or restore; a flag already in that state is left alone."""
    with Session(engine) as session, session.begin():
        bump_catalog_version(session)  # the catalog lock before the version check
        row = session.get(FlagRow, key)
        if row is None:
            raise HTTPException(404, f"flag: unknown flag {key!r}")
        if not matches(if_match, row.version):
            raise _stale("flag", key, row.version)
        now = datetime.now(UTC)
        if reason is not None:
            rollback_flag(session, key, reason=reason, actor=caller.actor, at=now)
        else:
            restore_flag(session, key, actor=caller.actor, at=now)
    with Session(engine) as session:
        return flag_of(session, key)


def _edit(
    engine: Engine,
    caller: Caller,
    entity_type: EntityType,
    key: str,
    action: str,
    if_match: str | None,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    lifecycle: bool = False,
) -> None:
    """One catalog change: lock, read, check the version, change, validate, write, audit. An
    edit of an experiment (not a ``lifecycle`` move) keeps to what its state allows (409)."""
    with Session(engine) as session, session.begin():
        bump_catalog_version(session)
        catalog = read_catalog(session)
        document = catalog.model_dump(mode="json")
        before = None
        if not action.endswith(".create"):
            row: ExperimentRow | FlagRow | None = (
                session.get(ExperimentRow, key)
                if entity_type == "experiment"
                else session.get(FlagRow, key)
            )
            if row is None:
                raise HTTPException(404, f"{entity_type}: unknown {entity_type} {key!r}")
            if not matches(if_match, row.version):
                raise _stale(entity_type, key, row.version)
            before = next(i for i in document[f"{entity_type}s"] if i["key"] == key)
        after = change(document)
        try:
            changed = parse_catalog(document)
        except CatalogError as exc:
            raise HTTPException(422, str(exc)) from None
        if entity_type == "experiment":
            if before is not None and not lifecycle:
                problem = edit_problem(catalog.experiment(key), changed.experiment(key))
                if problem is not None:
                    raise HTTPException(409, str(problem))
            write_experiment(session, changed.experiment(key))
        else:
            write_flag(session, next(f for f in changed.flags if f.key == key))
        audit(
            session,
            at=datetime.now(UTC),
            actor=caller.actor,
            action=action,
            entity_type=entity_type,
            entity_key=key,
            before=before,
            after=after,
        )


def _stale(entity_type: str, key: str, version: int) -> HTTPException:
    return HTTPException(
        412,
        f"If-Match: {entity_type} {key!r} is at version {version}; read it again and retry",
        {"ETag": etag(version)},
    )
