"""Documents built from SQL at send time, with deterministic ``_id``s: a replay overwrites."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import Session

from config.catalog import KEY_SEP
from sinks.opensearch.templates import monthly
from sinks.sql.models import AlertRow, LatestResultRow, ResultHistoryRow, WindowAggregateRow
from sinks.sql.store import as_utc, search_key
from stats.sufficient import STATISTICS, ArmStats, mean_and_variance

Keyed = list[tuple[str, dict[str, Any]]]  # (outbox key, bulk action)


def _number(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def result_document(result: dict[str, Any], looked_at: Any) -> dict[str, Any]:
    """A stored result row, its intervals as low/high fields (what a chart can plot)."""
    doc = {k: v for k, v in result.items() if k not in ("abs_ci", "rel_ci", "sequential_rel_ci")}
    for name in ("abs_ci", "rel_ci", "sequential_rel_ci"):
        interval = result.get(name) or [None, None]
        doc[f"{name.removesuffix('_ci')}_ci_low"] = interval[0]
        doc[f"{name.removesuffix('_ci')}_ci_high"] = interval[1]
    doc["comparison"] = f"{result['experiment']}/{result['metric']}/{result['variant']}"
    doc["looked_at"] = as_utc(looked_at).isoformat()
    return doc


def window_actions(engine: Engine, prefix: str, keys: Iterable[str]) -> Keyed:
    """One document per (experiment, variant, metric, window): partitions summed."""
    wanted = [key.split(KEY_SEP) for key in keys]
    if not wanted:
        return []
    columns = [func.sum(getattr(WindowAggregateRow, s)).label(s) for s in STATISTICS]
    t = WindowAggregateRow
    query = (
        select(t.experiment, t.variant, t.metric, t.window_start, *columns)
        .where(
            or_(
                *(
                    and_(
                        t.experiment == e,
                        t.variant == v,
                        t.metric == m,
                        t.window_start == int(w),
                    )
                    for e, v, m, w in wanted
                )
            )
        )
        .group_by(t.experiment, t.variant, t.metric, t.window_start)
    )
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    if not rows:
        return []
    stats = ArmStats.from_rows(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        means, variances = mean_and_variance(stats)
    actions: Keyed = []
    for row, mean, variance in zip(rows, means, variances, strict=True):
        start = int(row["window_start"])
        doc = {
            "experiment": row["experiment"],
            "variant": row["variant"],
            "metric": row["metric"],
            "window_start": start,
            "mean": _number(mean),
            "variance": _number(variance),
            **{s: float(row[s] or 0.0) for s in STATISTICS},
        }
        key = search_key(row["experiment"], row["variant"], row["metric"], str(start))
        actions.append(
            (key, {"_index": monthly(prefix, "windows", start), "_id": key, "_source": doc})
        )
    return actions


def result_actions(engine: Engine, prefix: str, keys: Iterable[str]) -> Keyed:
    actions: Keyed = []
    with Session(engine) as session:
        for key in keys:
            experiment, metric, variant = key.split(KEY_SEP)
            row = session.get(LatestResultRow, (experiment, metric, variant))
            if row is not None:
                source = result_document(row.result, row.looked_at)
                actions.append(
                    (key, {"_index": f"{prefix}-results", "_id": key, "_source": source})
                )
    return actions


def history_actions(engine: Engine, prefix: str, keys: Iterable[str]) -> Keyed:
    ids = [int(k) for k in keys]
    if not ids:
        return []
    with Session(engine) as session:
        rows = session.scalars(select(ResultHistoryRow).where(ResultHistoryRow.id.in_(ids))).all()
        return [
            (
                str(row.id),
                {
                    "_index": monthly(prefix, "results-history", as_utc(row.looked_at).timestamp()),
                    "_id": search_key(
                        row.experiment, row.metric, row.variant, as_utc(row.looked_at).isoformat()
                    ),
                    "_source": result_document(row.result, row.looked_at),
                },
            )
            for row in rows
        ]


def alert_actions(engine: Engine, prefix: str, keys: Iterable[str]) -> Keyed:
    with Session(engine) as session:
        rows = session.scalars(select(AlertRow).where(AlertRow.alert_id.in_(list(keys)))).all()
        actions: Keyed = []
        for row in rows:
            doc = {k: v for k, v in row.payload.items() if k not in ("rel_ci", "arm_sizes")}
            interval: list[Any] = list(row.payload.get("rel_ci") or [None, None])  # type: ignore[call-overload]
            low, high = interval
            doc |= {"rel_ci_low": low, "rel_ci_high": high}
            action = {"_index": f"{prefix}-alerts", "_id": row.alert_id, "_source": doc}
            actions.append((row.alert_id, action))
        return actions


BUILDERS = {
    "window": window_actions,
    "result": result_actions,
    "history": history_actions,
    "alert": alert_actions,
}
