"""GET /v1/assignments and POST /v1/assignments/batch: deterministic, GrowthBook-compatible."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from starlette.routing import Route

from api.auth import authorize
from api.deps import Assigner, StateDep
from api.schemas import BatchAssignmentsIn, BatchAssignmentsOut
from api.state import AssignmentPlan, CatalogSnapshot
from api.strict_json import StrictJsonRoute
from stats.assignment import assign_many, choose_variant, hash_unit

router = APIRouter(prefix="/v1", tags=["assignments"], route_class=StrictJsonRoute)


def _plans(snapshot: CatalogSnapshot, key: str | None) -> list[AssignmentPlan]:
    if key is None:
        return [snapshot.plans[e.key] for e in snapshot.running]
    if key not in snapshot.plans:
        raise HTTPException(404, f"experiment: unknown experiment {key!r}")
    return [snapshot.plans[key]]


def _result(plan: AssignmentPlan, index: int) -> dict[str, Any]:
    experiment = plan.experiment
    if plan.held is None and index >= 0:
        variant, reason = experiment.variants[index].key, "assigned"
    else:  # outside coverage or held back: the control experience, not in the experiment
        variant, reason = experiment.control, plan.held or "not_in_coverage"
    return {
        "experiment": experiment.key,
        "in_experiment": reason == "assigned",
        "variant": variant,
        "hash_version": experiment.hash_version,
        "reason": reason,
    }


def _index(plan: AssignmentPlan, user_id: str) -> int:
    if plan.held is not None:
        return -1
    e = plan.experiment
    unit = hash_unit(e.hashing_seed, user_id, e.hash_version, plan.seed_state)
    return -1 if unit is None else choose_variant(unit, plan.ranges)


QUERY_PARAMETERS = [
    {
        "name": "user_id",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    },
    {
        "name": "experiment",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 128},
        "description": "Only this experiment (in any state); default: every running or paused one.",
    },
]


def _query(request: Request, name: str, max_length: int, required: bool) -> str | None:
    """A query parameter checked by hand: FastAPI's parameter machinery costs more than the
    assignment itself on this endpoint. Errors have FastAPI's 422 shape."""
    value = request.query_params.get(name)
    if value is None and not required:
        return None
    if value is None or not 0 < len(value) <= max_length:
        problem = "field required" if value is None else f"must be 1 to {max_length} characters"
        raise HTTPException(422, [{"loc": ["query", name], "msg": problem, "type": "value_error"}])
    return value


async def get_assignments(request: Request) -> Response:
    """GET /v1/assignments. The hottest endpoint is a plain Starlette route: FastAPI's request
    handling (dependencies, parameter and response models) costs more than the assignment. The
    same auth check is called directly; its OpenAPI entry is added by api.app."""
    request.scope["route"] = assignments_route  # FastAPI's router labels only its own routes
    authorize(request, "assign")
    user_id = _query(request, "user_id", 256, required=True)
    experiment = _query(request, "experiment", 128, required=False)
    assert user_id is not None
    snapshot = await request.app.state.xp.current_catalog()
    results = [_result(plan, _index(plan, user_id)) for plan in _plans(snapshot, experiment)]
    body = orjson.dumps({"user_id": user_id, "assignments": results})
    return Response(body, media_type="application/json")


assignments_route = Route("/v1/assignments", get_assignments, methods=["GET"])

OPENAPI = {
    "get": {
        "tags": ["assignments"],
        "summary": "The user's variant in every running experiment, or in the one named",
        "operationId": "get_assignments",
        "parameters": QUERY_PARAMETERS,
        "responses": {
            "200": {
                "description": "Assignments",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/UserAssignments"}}
                },
            },
            "401": {"description": "Missing or invalid API key"},
            "403": {"description": "The key's role may not assign"},
            "404": {"description": "Unknown experiment"},
            "422": {"description": "A query parameter is missing or too long"},
        },
    }
}


@router.post("/assignments/batch", response_model=BatchAssignmentsOut)
async def batch_assignments(
    body: BatchAssignmentsIn, state: StateDep, _caller: Assigner
) -> Response:
    if any(not 0 < len(u) <= 256 for u in body.user_ids):
        raise HTTPException(422, "user_ids: every user id must be 1 to 256 characters")
    snapshot = await state.current_catalog()
    plans = _plans(snapshot, body.experiment)
    # Up to 1,000 users × every running experiment: hashed and encoded off the event loop.
    encoded = await asyncio.to_thread(_batch, plans, body.user_ids)
    return Response(encoded, media_type="application/json")


def _batch(plans: list[AssignmentPlan], user_ids: list[str]) -> bytes:
    per_user: list[list[dict[str, Any]]] = [[] for _ in user_ids]
    for plan in plans:
        e = plan.experiment
        indices = (
            np.full(len(user_ids), -1)
            if plan.held
            else assign_many(user_ids, e.hashing_seed, plan.weights, e.coverage, e.hash_version)
        )
        for row, index in enumerate(indices.tolist()):
            per_user[row].append(_result(plan, index))
    payload = {
        "assignments": [
            {"user_id": u, "assignments": a} for u, a in zip(user_ids, per_user, strict=True)
        ]
    }
    return orjson.dumps(payload)
