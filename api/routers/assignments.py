"""GET /v1/assignments and POST /v1/assignments/batch: deterministic, GrowthBook-compatible."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from api.auth import Caller, requires
from api.schemas import Assignment, BatchAssignmentsIn, BatchAssignmentsOut, UserAssignments
from api.state import CatalogSnapshot
from config.catalog import Experiment
from stats.assignment import assign, assign_many

router = APIRouter(prefix="/v1", tags=["assignments"])


def _experiments(snapshot: CatalogSnapshot, key: str | None) -> list[Experiment]:
    if key is None:
        return list(snapshot.running)
    found = [e for e in snapshot.catalog.experiments if e.key == key]
    if not found:
        raise HTTPException(404, f"experiment: unknown experiment {key!r}")
    return found


def _held(snapshot: CatalogSnapshot, experiment: Experiment) -> str | None:
    """Why everyone gets control, if they do."""
    if experiment.status != "running":
        return "not_running"
    if experiment.flag is not None:
        return snapshot.serving_control.get(experiment.flag)
    return None


def _result(experiment: Experiment, index: int, held: str | None) -> Assignment:
    if held is None and index >= 0:
        variant, reason = experiment.variants[index].key, "assigned"
    else:  # outside coverage or held back: the control experience, not in the experiment
        variant, reason = experiment.control, held or "not_in_coverage"
    return Assignment(
        experiment=experiment.key,
        in_experiment=reason == "assigned",
        variant=variant,
        hash_version=experiment.hash_version,
        reason=reason,
    )


@router.get("/assignments", response_model=UserAssignments)
async def get_assignments(
    request: Request,
    _caller: Annotated[Caller, Depends(requires("assign"))],
    user_id: Annotated[str, Query(min_length=1, max_length=256)],
    experiment: Annotated[str | None, Query(max_length=128)] = None,
) -> UserAssignments:
    snapshot = request.app.state.xp.catalog()
    results = []
    for e in _experiments(snapshot, experiment):
        held = _held(snapshot, e)
        index = (
            -1
            if held
            else assign(
                user_id, e.hashing_seed, [v.weight for v in e.variants], e.coverage, e.hash_version
            )
        )
        results.append(_result(e, index, held))
    return UserAssignments(user_id=user_id, assignments=results)


@router.post("/assignments/batch", response_model=BatchAssignmentsOut)
async def batch_assignments(
    body: BatchAssignmentsIn,
    request: Request,
    _caller: Annotated[Caller, Depends(requires("assign"))],
) -> BatchAssignmentsOut:
    if any(not 0 < len(u) <= 256 for u in body.user_ids):
        raise HTTPException(422, "user_ids: every user id must be 1 to 256 characters")
    snapshot = request.app.state.xp.catalog()
    per_user: list[list[Assignment]] = [[] for _ in body.user_ids]
    for e in _experiments(snapshot, body.experiment):
        held = _held(snapshot, e)
        indices = (
            np.full(len(body.user_ids), -1)
            if held
            else assign_many(
                body.user_ids,
                e.hashing_seed,
                [v.weight for v in e.variants],
                e.coverage,
                e.hash_version,
            )
        )
        for row, index in enumerate(indices.tolist()):
            per_user[row].append(_result(e, index, held))
    return BatchAssignmentsOut(
        assignments=[
            UserAssignments(user_id=u, assignments=a)
            for u, a in zip(body.user_ids, per_user, strict=True)
        ]
    )
