"""Reports (what the analyzer stored at its last look), per-window statistics, alerts, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy.orm import Session

from api.auth import Caller, requires
from api.routers.catalog import _experiment, _flag_out
from api.schemas import Report, WindowPoint
from api.state import ApiState
from sinks.sql.alerts import list_alerts
from sinks.sql.audit import as_utc, list_audit
from sinks.sql.models import FlagRow
from sinks.sql.results import guardrail_states, last_look, latest_results, srm_state
from sinks.sql.store import counter_totals, window_rows
from stats.sufficient import STATISTICS, ArmStats, mean_and_variance

router = APIRouter(prefix="/v1", tags=["reports"])
Since = Annotated[datetime | None, Query(description="ISO 8601; only entries at or after it")]


@router.get("/experiments/{key}/report", response_model=Report)
def report(
    key: str, request: Request, _caller: Annotated[Caller, Depends(requires("read"))]
) -> Report:
    state: ApiState = request.app.state.xp
    experiment = _experiment(state.catalog().catalog, key)
    flag = None
    if experiment.flag is not None:
        with Session(state.engine) as session:
            row = session.get(FlagRow, experiment.flag)
            flag = _flag_out(row) if row is not None else None
    looked_at = last_look(state.engine, key)
    order = {m: i for i, m in enumerate(experiment.analysed_metrics)}
    results = sorted(
        latest_results(state.engine, key),
        key=lambda r: (order.get(r["metric"], len(order)), r["variant"]),
    )
    return Report(
        experiment=key,
        status=experiment.status,
        looked_at=as_utc(looked_at).isoformat() if looked_at else None,
        results=results,
        srm=srm_state(state.engine, key),
        guardrails=guardrail_states(state.engine, key),
        flag=flag,
        counters={
            name: int(counter_totals(state.engine, name).get(key, 0.0))
            for name in ("users", "crossovers")
        },
    )


@router.get("/experiments/{key}/timeseries", response_model=list[WindowPoint])
def timeseries(
    key: str, request: Request, _caller: Annotated[Caller, Depends(requires("analyse"))]
) -> list[WindowPoint]:
    state: ApiState = request.app.state.xp
    _experiment(state.catalog().catalog, key)
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
def alerts(
    request: Request, _caller: Annotated[Caller, Depends(requires("read"))], since: Since = None
) -> list[dict[str, object]]:
    return list_alerts(request.app.state.xp.engine, _aware(since))


@router.get("/audit")
def audit_log(
    request: Request, _caller: Annotated[Caller, Depends(requires("analyse"))], since: Since = None
) -> list[dict[str, object]]:
    return list_audit(request.app.state.xp.engine, _aware(since))


def _aware(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    if since.year < 1900 or since.year > 9000:
        raise HTTPException(422, "since: out of range")
    return as_utc(since)
