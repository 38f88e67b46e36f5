"""Reports of experiments as the API and the console show them: what the analyzer stored at its
last look, and the relative effect over time (one service, so a page and the API agree)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.catalog_service import flag_public
from api.schemas import Report
from api.state import ApiState
from config.catalog import Experiment
from sinks.sql.analysis import lift_over_time
from sinks.sql.models import FlagRow, PartitionOffsetRow
from sinks.sql.results import guardrail_states, last_look, latest_results, srm_state
from sinks.sql.store import as_utc, counter_totals
from stats.analysis import AnalysisOptions

LIFT_CACHE_SIZE = 64  # experiments whose effect over time a process keeps


def experiment_of(state: ApiState, key: str) -> Experiment:
    try:
        return state.catalog().catalog.experiment(key)
    except StopIteration:
        raise HTTPException(404, f"experiment: unknown experiment {key!r}") from None


def experiment_report(state: ApiState, session: Session, key: str) -> Report:
    experiment = experiment_of(state, key)
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


def experiment_lift(state: ApiState, key: str, points: int | None = None) -> list[dict[str, Any]]:
    """After each window (or each of about ``points`` periods), per metric and variant: users
    in the two arms, the relative effect and its always-valid interval (intersected over
    time)."""
    experiment = experiment_of(state, key)
    # Window rows change only with a flush, which moves an offset: until then, the last answer.
    with state.engine.connect() as conn:
        flushed = tuple(
            conn.execute(
                select(
                    PartitionOffsetRow.topic,
                    PartitionOffsetRow.partition,
                    PartitionOffsetRow.offset,
                ).order_by(PartitionOffsetRow.topic, PartitionOffsetRow.partition)
            )
        )
    signature = (experiment, flushed)  # and the cache's key: (key, points)
    cached = state.lift_cache.get((key, points))
    if cached is not None and cached[0] == signature:
        return cached[1]
    series = lift_over_time(
        state.engine,
        state.catalog().catalog,
        experiment,
        AnalysisOptions(state.settings.alpha, state.settings.tau),
        points,
    )
    lift = [
        {"metric": metric, "variant": variant, **point}
        for (metric, variant), line in series.items()
        for point in line
    ]
    state.lift_cache[(key, points)] = (signature, lift)
    while len(state.lift_cache) > LIFT_CACHE_SIZE:
        state.lift_cache.pop(next(iter(state.lift_cache)))
    return lift
