"""Experiments and flags: read, create, update, schedule, start/pause/resume/stop, roll back
and restore. Every write goes
through :mod:`api.catalog_service` (validated against the whole catalog, audited, versioned:
``ETag`` on reads, ``If-Match`` on writes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response

from api import catalog_service as service
from api.deps import Admin, Reader, SessionDep, StateDep, Writer
from api.schemas import (
    ExperimentPublic,
    ExperimentUpdate,
    FlagPublic,
    FlagUpdate,
    RollbackIn,
    ScheduleIn,
)
from api.strict_json import StrictJsonRoute
from config.catalog import Experiment, Flag
from config.lifecycle import Action

router = APIRouter(prefix="/v1", tags=["experiments and flags"], route_class=StrictJsonRoute)
IfMatch = Annotated[
    str | None,
    Header(description="The ETag of the version this change is based on: 412 when it is stale"),
]


def _changes(key: str, body: ExperimentUpdate | FlagUpdate) -> dict[str, Any]:
    changes = body.model_dump(mode="json", exclude_unset=True)
    if changes.pop("key", key) != key:
        raise HTTPException(422, f"key: body key {body.key!r} differs from the path's {key!r}")
    return changes


def _tagged(response: Response, version: int) -> None:
    response.headers["ETag"] = service.etag(version)


@router.get("/experiments", response_model=list[ExperimentPublic])
def list_experiments(session: SessionDep, _caller: Reader) -> list[ExperimentPublic]:
    return service.experiments_public(session)


@router.get("/experiments/{key}", response_model=ExperimentPublic)
def get_experiment(
    key: str, session: SessionDep, _caller: Reader, response: Response
) -> ExperimentPublic:
    experiment = service.experiment_public(session, key)
    _tagged(response, experiment.version)
    return experiment


@router.post("/experiments", status_code=201, response_model=ExperimentPublic)
def create_experiment(
    body: Experiment, state: StateDep, caller: Writer, response: Response
) -> ExperimentPublic:
    experiment = service.create_experiment(state.engine, caller, body)
    state.catalog_changed()
    _tagged(response, experiment.version)
    return experiment


@router.put("/experiments/{key}", response_model=ExperimentPublic)
def update_experiment(
    key: str,
    body: ExperimentUpdate,
    state: StateDep,
    caller: Writer,
    response: Response,
    if_match: IfMatch = None,
) -> ExperimentPublic:
    """Changes the fields given; the rest keep their value."""
    experiment = service.update_experiment(state.engine, caller, key, _changes(key, body), if_match)
    state.catalog_changed()
    _tagged(response, experiment.version)
    return experiment


@router.put("/experiments/{key}/schedule", response_model=ExperimentPublic)
def schedule_experiment(
    key: str,
    body: ScheduleIn,
    state: StateDep,
    caller: Writer,
    response: Response,
    if_match: IfMatch = None,
) -> ExperimentPublic:
    """When the scheduler starts (a draft) or resumes (a paused experiment), and stops it; only
    a draft, scheduled or paused experiment takes a schedule (else 409)."""
    experiment = service.schedule_experiment(
        state.engine, caller, key, body.start_at, body.end_at, if_match
    )
    state.catalog_changed()
    _tagged(response, experiment.version)
    return experiment


@router.post("/experiments/{key}/{action}", response_model=ExperimentPublic)
def move_experiment(
    key: str,
    action: Action,
    state: StateDep,
    caller: Writer,
    response: Response,
    if_match: IfMatch = None,
) -> ExperimentPublic:
    """start (draft or scheduled), pause (running), resume (paused), stop (running or paused);
    any other move answers 409 naming the rule."""
    experiment = service.transition_experiment(state.engine, caller, key, action, if_match)
    state.catalog_changed()
    _tagged(response, experiment.version)
    return experiment


@router.get("/flags", response_model=list[FlagPublic])
def list_flags(session: SessionDep, _caller: Reader) -> list[FlagPublic]:
    return service.flags_public(session)


@router.get("/flags/{key}", response_model=FlagPublic)
def get_flag(key: str, session: SessionDep, _caller: Reader, response: Response) -> FlagPublic:
    flag = service.flag_of(session, key)
    _tagged(response, flag.version)
    return flag


@router.post("/flags", status_code=201, response_model=FlagPublic)
def create_flag(body: Flag, state: StateDep, caller: Writer, response: Response) -> FlagPublic:
    flag = service.create_flag(state.engine, caller, body)
    state.catalog_changed()
    _tagged(response, flag.version)
    return flag


@router.put("/flags/{key}", response_model=FlagPublic)
def update_flag(
    key: str,
    body: FlagUpdate,
    state: StateDep,
    caller: Writer,
    response: Response,
    if_match: IfMatch = None,
) -> FlagPublic:
    """Changes the fields given; the rest keep their value."""
    changes = _changes(key, body)
    if any(value is None for name, value in changes.items() if name != "default"):
        raise HTTPException(422, "a field given to change may not be null (but a json default)")
    flag = service.update_flag(state.engine, caller, key, changes, if_match)
    state.catalog_changed()
    _tagged(response, flag.version)
    return flag


@router.post("/flags/{key}/rollback", response_model=FlagPublic)
def rollback(
    key: str,
    state: StateDep,
    caller: Admin,
    response: Response,
    body: RollbackIn | None = None,
    if_match: IfMatch = None,
) -> FlagPublic:
    """Serve control to everyone now; a flag already rolled back is left as it is."""
    reason = (body or RollbackIn()).reason
    flag = service.set_rolled_back(state.engine, caller, key, reason, if_match)
    state.catalog_changed()
    _tagged(response, flag.version)
    return flag


@router.post("/flags/{key}/restore", response_model=FlagPublic)
def restore(
    key: str, state: StateDep, caller: Admin, response: Response, if_match: IfMatch = None
) -> FlagPublic:
    """A person re-enables a rolled-back flag (a breach already acted on does not roll it back
    again)."""
    flag = service.set_rolled_back(state.engine, caller, key, None, if_match)
    state.catalog_changed()
    _tagged(response, flag.version)
    return flag
