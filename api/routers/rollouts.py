"""Rollout schedules (developer: create, advance, pause, resume, roll back) and safety settings
(admin writes; readers see the settings and the safety report)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api import rollout_service as service
from api.deps import Admin, Reader, StateDep, Writer
from api.rollout_service import Move
from api.schemas import RollbackIn
from api.strict_json import StrictJsonRoute
from config.rollouts import RolloutIn
from config.safety import SafetySettings

router = APIRouter(prefix="/v1", tags=["rollouts and safety"], route_class=StrictJsonRoute)
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/rollout-schedules", status_code=201)
def create_rollout(body: RolloutIn, state: StateDep, caller: Writer) -> dict[str, Any]:
    """Starts the first stage now; each later stage begins when its trigger allows."""
    rollout = service.create(state.engine, caller, body)
    state.catalog_changed()
    return rollout


@router.get("/rollout-schedules")
def list_rollouts(state: StateDep, _caller: Reader) -> list[dict[str, Any]]:
    return service.listing(state.engine)


@router.get("/rollout-schedules/{rollout_id}")
def get_rollout(rollout_id: RolloutId, state: StateDep, _caller: Reader) -> dict[str, Any]:
    return service.public(state.engine, rollout_id)


@router.post("/rollout-schedules/{rollout_id}/{action}")
def move_rollout(
    rollout_id: RolloutId,
    action: Move,
    state: StateDep,
    caller: Writer,
    body: RollbackIn | None = None,
) -> dict[str, Any]:
    """advance (the next stage now, whatever its trigger), pause, resume, rollback (everyone
    gets the old value); a move the schedule's state forbids answers 409."""
    reason = (body or RollbackIn()).reason
    rollout = service.move(state.engine, caller, rollout_id, action, reason)
    state.catalog_changed()
    return rollout


@router.get("/safety/settings", response_model=SafetySettings)
def get_safety_settings(state: StateDep, _caller: Reader) -> SafetySettings:
    return service.safety_settings(state.engine)


@router.put("/safety/settings", response_model=SafetySettings)
def put_safety_settings(body: SafetySettings, state: StateDep, caller: Admin) -> SafetySettings:
    """Guardrails added to every rollout schedule and every experiment with a flag (a flag's
    own list in ``flags`` replaces them for that flag)."""
    settings = service.put_safety_settings(state.engine, caller, body)
    state.catalog_changed()
    return settings


@router.get("/safety/report")
def safety_report(state: StateDep, _caller: Reader) -> dict[str, Any]:
    return service.safety_report(state.engine)
