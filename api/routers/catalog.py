"""Experiments and flags: read, create, update, stop, roll back and restore — each change
validated against the whole catalog and audited in the transaction that makes it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.orm import Session

from api.auth import Caller, requires
from api.schemas import FlagOut, RollbackIn
from api.state import ApiState
from config.catalog import Catalog, CatalogError, Experiment, Flag, parse_catalog
from sinks.sql.audit import as_utc, audit, restore_flag, rollback_flag
from sinks.sql.models import FlagRow
from sinks.sql.store import load_catalog, write_catalog

router = APIRouter(prefix="/v1", tags=["experiments and flags"])


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.xp
    return state


def _experiment(catalog: Catalog, key: str) -> Experiment:
    for experiment in catalog.experiments:
        if experiment.key == key:
            return experiment
    raise HTTPException(404, f"experiment: unknown experiment {key!r}")


def _change(
    state: ApiState,
    caller: Caller,
    edit: Callable[[dict[str, Any]], None],
    entity: tuple[str, str, str],
    before: dict[str, Any] | None,
    after: dict[str, Any],
) -> None:
    """Apply ``edit`` to the catalog document, validate the whole of it, store it with its audit."""
    document = load_catalog(state.engine).model_dump(mode="json")
    edit(document)
    try:
        catalog = parse_catalog(document)
    except CatalogError as exc:
        raise HTTPException(422, str(exc)) from None
    entity_type, key, action = entity
    with Session(state.engine) as session, session.begin():
        write_catalog(session, catalog)
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
    state.catalog_changed()


@router.get("/experiments", response_model=list[Experiment])
async def list_experiments(
    request: Request, _caller: Annotated[Caller, Depends(requires("read"))]
) -> list[Experiment]:
    return list(_state(request).catalog().catalog.experiments)


@router.get("/experiments/{key}", response_model=Experiment)
async def get_experiment(
    key: str, request: Request, _caller: Annotated[Caller, Depends(requires("read"))]
) -> Experiment:
    return _experiment(_state(request).catalog().catalog, key)


@router.post("/experiments", status_code=201, response_model=Experiment)
def create_experiment(
    body: Experiment, request: Request, caller: Annotated[Caller, Depends(requires("write"))]
) -> Experiment:
    state = _state(request)
    if any(e.key == body.key for e in load_catalog(state.engine).experiments):
        raise HTTPException(409, f"key: experiment {body.key!r} exists; PUT to change it")
    after = body.model_dump(mode="json")
    _change(
        state,
        caller,
        lambda doc: doc["experiments"].append(after),
        ("experiment", body.key, "experiment.create"),
        None,
        after,
    )
    return body


@router.put("/experiments/{key}", response_model=Experiment)
def update_experiment(
    key: str,
    body: Experiment,
    request: Request,
    caller: Annotated[Caller, Depends(requires("write"))],
) -> Experiment:
    if body.key != key:
        raise HTTPException(422, f"key: body key {body.key!r} differs from the path's {key!r}")
    state = _state(request)
    before = _experiment(load_catalog(state.engine), key).model_dump(mode="json")
    return _replace_experiment(state, caller, before, body.model_dump(mode="json"), "update")


@router.post("/experiments/{key}/stop", response_model=Experiment)
def stop_experiment(
    key: str, request: Request, caller: Annotated[Caller, Depends(requires("write"))]
) -> Experiment:
    state = _state(request)
    before = _experiment(load_catalog(state.engine), key).model_dump(mode="json")
    return _replace_experiment(state, caller, before, {**before, "status": "stopped"}, "stop")


def _replace_experiment(
    state: ApiState, caller: Caller, before: dict[str, Any], after: dict[str, Any], verb: str
) -> Experiment:
    def edit(doc: dict[str, Any]) -> None:
        doc["experiments"] = [after if e["key"] == after["key"] else e for e in doc["experiments"]]

    _change(state, caller, edit, ("experiment", after["key"], f"experiment.{verb}"), before, after)
    return Experiment.model_validate(after)


def _flag_out(row: FlagRow) -> FlagOut:
    return FlagOut(
        key=row.key,
        enabled=row.enabled,
        rollout=row.rollout,
        rolled_back=row.rolled_back_at is not None,
        rolled_back_at=as_utc(row.rolled_back_at).isoformat() if row.rolled_back_at else None,
        rollback_reason=row.rollback_reason,
    )


def _flag_row(state: ApiState, key: str) -> FlagOut:
    with Session(state.engine) as session:
        row = session.get(FlagRow, key)
        if row is None:
            raise HTTPException(404, f"flag: unknown flag {key!r}")
        return _flag_out(row)


@router.get("/flags", response_model=list[FlagOut])
def list_flags(
    request: Request, _caller: Annotated[Caller, Depends(requires("read"))]
) -> list[FlagOut]:
    with Session(_state(request).engine) as session:
        return [_flag_out(row) for row in session.query(FlagRow).order_by(FlagRow.key)]


@router.get("/flags/{key}", response_model=FlagOut)
def get_flag(
    key: str, request: Request, _caller: Annotated[Caller, Depends(requires("read"))]
) -> FlagOut:
    return _flag_row(_state(request), key)


@router.post("/flags", status_code=201, response_model=FlagOut)
def create_flag(
    body: Flag, request: Request, caller: Annotated[Caller, Depends(requires("write"))]
) -> FlagOut:
    state = _state(request)
    if any(f.key == body.key for f in load_catalog(state.engine).flags):
        raise HTTPException(409, f"key: flag {body.key!r} exists; PUT to change it")
    after = body.model_dump(mode="json")
    _change(
        state,
        caller,
        lambda doc: doc["flags"].append(after),
        ("flag", body.key, "flag.create"),
        None,
        after,
    )
    return _flag_row(state, body.key)


@router.put("/flags/{key}", response_model=FlagOut)
def update_flag(
    key: str, body: Flag, request: Request, caller: Annotated[Caller, Depends(requires("write"))]
) -> FlagOut:
    if body.key != key:
        raise HTTPException(422, f"key: body key {body.key!r} differs from the path's {key!r}")
    state = _state(request)
    before = _flag_row(state, key).model_dump()
    after = body.model_dump(mode="json")

    def edit(doc: dict[str, Any]) -> None:
        doc["flags"] = [after if f["key"] == key else f for f in doc["flags"]]

    _change(state, caller, edit, ("flag", key, "flag.update"), before, after)
    return _flag_row(state, key)


@router.post("/flags/{key}/rollback", response_model=FlagOut)
def rollback(
    key: str,
    request: Request,
    caller: Annotated[Caller, Depends(requires("admin"))],
    body: RollbackIn | None = None,
) -> FlagOut:
    """Serve control to everyone now; a flag already rolled back is left as it is."""
    state = _state(request)
    _flag_row(state, key)
    reason = (body or RollbackIn()).reason
    with Session(state.engine) as session, session.begin():
        rollback_flag(session, key, reason=reason, actor=caller.actor, at=datetime.now(UTC))
    state.catalog_changed()
    return _flag_row(state, key)


@router.post("/flags/{key}/restore", response_model=FlagOut)
def restore(
    key: str, request: Request, caller: Annotated[Caller, Depends(requires("admin"))]
) -> FlagOut:
    """A person re-enables a rolled-back flag (a breach already acted on does not roll it back
    again)."""
    state = _state(request)
    _flag_row(state, key)
    with Session(state.engine) as session, session.begin():
        restore_flag(session, key, actor=caller.actor, at=datetime.now(UTC))
    state.catalog_changed()
    return _flag_row(state, key)
