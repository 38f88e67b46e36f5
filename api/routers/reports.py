"""Reports (what the analyzer stored at its last look), per-window statistics, alerts, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from api.deps import Analyst, Reader, SessionDep, StateDep
from api.report_service import experiment_lift, experiment_of, experiment_report
from api.schemas import Report, WindowPoint
from api.strict_json import StrictJsonRoute
from sinks.sql.alerts import list_alerts
from sinks.sql.audit import list_audit
from sinks.sql.store import as_utc, window_rows
from stats.sufficient import STATISTICS, ArmStats, mean_and_variance

router = APIRouter(prefix="/v1", tags=["reports"], route_class=StrictJsonRoute)
Since = Annotated[datetime | None, Query(description="ISO 8601; only entries at or after it")]


@router.get("/experiments/{key}/report", response_model=Report)
def report(key: str, state: StateDep, session: SessionDep, _caller: Reader) -> Report:
    return experiment_report(state, session, key)


@router.get("/experiments/{key}/lift")
def lift(
    key: str,
    state: StateDep,
    _caller: Analyst,
    points: Annotated[int | None, Query(ge=2, le=100_000)] = None,
) -> list[dict[str, Any]]:
    """After each window, per metric and variant: users in the two arms, the relative effect
    and its always-valid interval, intersected with every earlier one. ``points``: at most
    about that many periods instead of every window (the console's charts ask for 240)."""
    return experiment_lift(state, key, points)


@router.get("/experiments/{key}/timeseries", response_model=list[WindowPoint])
def timeseries(key: str, state: StateDep, _caller: Analyst) -> list[WindowPoint]:
    experiment_of(state, key)
    rows = window_rows(state.engine, key)
    if not rows:
        return []
    stats = ArmStats.from_rows(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        means, variances = mean_and_variance(stats)
    return [
        WindowPoint(
            variant=r["variant"],
            metric=r["metric"],
            window_start=int(r["window_start"]),
            n=float(r["n"] or 0.0),
            mean=float(m) if np.isfinite(m) else None,
            variance=float(v) if np.isfinite(v) else None,
            sums={k: float(r[k] or 0.0) for k in STATISTICS if k != "n"},
        )
        for r, m, v in zip(rows, means, variances, strict=True)
    ]


@router.get("/alerts")
def alerts(state: StateDep, _caller: Reader, since: Since = None) -> list[dict[str, object]]:
    return list_alerts(state.engine, _aware(since))


@router.get("/audit")
def audit_log(state: StateDep, _caller: Analyst, since: Since = None) -> list[dict[str, object]]:
    return list_audit(state.engine, _aware(since))


def _aware(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    if since.year < 1900 or since.year > 9000:
        raise HTTPException(422, "since: out of range")
    return as_utc(since)
