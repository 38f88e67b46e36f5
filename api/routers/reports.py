"""Reports (what the analyzer stored at its last look), per-window statistics, alerts, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from api.catalog_service import flag_public
from api.deps import Analyst, Reader, SessionDep, StateDep
from api.schemas import Report, WindowPoint
from api.state import ApiState
from api.strict_json import StrictJsonRoute
from config.catalog import Experiment
from sinks.sql.alerts import list_alerts
from sinks.sql.audit import list_audit
from sinks.sql.models import FlagRow
from sinks.sql.results import guardrail_states, last_look, latest_results, srm_state
from sinks.sql.store import as_utc, counter_totals, window_rows
from stats.sufficient import STATISTICS, ArmStats, mean_and_variance

router = APIRouter(prefix="/v1", tags=["reports"], route_class=StrictJsonRoute)
Since = Annotated[datetime | None, Query(description="ISO 8601; only entries at or after it")]


@router.get("/experiments/{key}/report", response_model=Report)
def report(key: str, state: StateDep, session: SessionDep, _caller: Reader) -> Report:
    experiment = _experiment(state, key)
    flag = None
    if experiment.flag is not None:
        row = session.get(FlagRow, experiment.flag)
        flag = flag_public(row) if row is not None else None
    looked_at = last_look(state.engine, key)
    order = {m: i for i, m in enumerate(experiment.analysed_metrics)}
    results = sorted(
        latest_results(state.engine, key),
        key=lambda r: (order.get(r["metric"], len(order)), r["variant"]),
    )
    return Report(
        experiment=key,
        status=experiment.status,
        started_at=experiment.started_at,
        stopped_at=experiment.stopped_at,
        start_at=experiment.start_at,
        end_at=experiment.end_at,
        looked_at=as_utc(looked_at).isoformat() if looked_at else None,
        results=results,
        srm=srm_state(state.engine, key),
        guardrails=guardrail_states(state.engine, key),
        flag=flag,
        counters={
            name: int(counter_totals(state.engine, name).get(key, 0.0))
            for name in ("users", "crossovers", "outside_schedule")
        },
    )


@router.get("/experiments/{key}/timeseries", response_model=list[WindowPoint])
def timeseries(key: str, state: StateDep, _caller: Analyst) -> list[WindowPoint]:
    _experiment(state, key)
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


def _experiment(state: ApiState, key: str) -> Experiment:
    try:
        return state.catalog().catalog.experiment(key)
    except StopIteration:
        raise HTTPException(404, f"experiment: unknown experiment {key!r}") from None


def _aware(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    if since.year < 1900 or since.year > 9000:
        raise HTTPException(422, "since: out of range")
    return as_utc(since)
