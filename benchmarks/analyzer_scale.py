"""One analyzer look at scale, on PostgreSQL 15: N running experiments × 2 arms × 5 metrics × 8
partitions, with 24 and with 720 hourly windows of statistics, beside the query the analyzer ran
before totals were kept (summing every window row) in the same run.

Run: PYTHONPATH=. .venv/bin/python benchmarks/analyzer_scale.py [--experiments 1000]
The rows are made inside Postgres (generate_series), the totals from them as migration 0009
makes them; each database then gets a warm-up look and the median of --looks timed looks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import sqlalchemy as sa

from config.catalog import parse_catalog
from jobs.analyzer import analyze_once
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import WindowAggregateRow
from sinks.sql.store import make_engine, save_catalog
from stats.sufficient import STATISTICS
from tests.services.postgres import PostgresCluster

METRICS = ("revenue", "purchase", "orders", "errors", "clicks")
PARTITIONS = 8


def catalog(experiments: int) -> dict[str, object]:
    return {
        "metrics": [
            {"key": "revenue", "kind": "sum"},
            {"key": "purchase", "kind": "conversion"},
            {"key": "orders", "kind": "count"},
            {"key": "errors", "kind": "count", "higher_is_better": False},
            {"key": "clicks", "kind": "count"},
        ],
        "experiments": [
            {
                "key": f"exp-{i}",
                "control": "control",
                "variants": [
                    {"key": "control", "weight": 0.5},
                    {"key": "treatment", "weight": 0.5},
                ],
                "metrics": list(METRICS[:4]),
                "guardrails": [{"metric": "clicks", "bad_direction": "decrease"}],
            }
            for i in range(experiments)
        ],
    }


def fill(engine: sa.Engine, experiments: int, windows: int) -> int:
    """Window rows of plausible statistics (every arm, metric, partition and hour), and the
    totals summed from them; returns the number of window rows."""
    columns = ", ".join(STATISTICS)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"""
                INSERT INTO window_aggregates (experiment, variant, metric, window_start,
                    partition, {columns}, source_offset)
                SELECT 'exp-' || e, v, m, 1700000000 + 3600 * w, p,
                    n, n * 0.7, n * 0.9, n * 0.6, n * 0.8, n * 0.5, 0, 0, 0, w
                FROM generate_series(0, :experiments - 1) AS e,
                    unnest(ARRAY['control', 'treatment']) AS v,
                    unnest(CAST(:metrics AS text[])) AS m,
                    generate_series(0, :windows - 1) AS w,
                    generate_series(0, {PARTITIONS - 1}) AS p,
                    LATERAL (SELECT 40.0 + (e + w + p) % 7 + (v = 'treatment')::int AS n) AS s
                """
            ),
            {"experiments": experiments, "windows": windows, "metrics": list(METRICS)},
        )
        sum_totals(conn)
        return int(conn.execute(sa.text("SELECT count(*) FROM window_aggregates")).scalar_one())


def sum_totals(conn: sa.Connection) -> None:
    """The totals of every window row, as migration 0009 makes them; then fresh statistics."""
    columns = ", ".join(STATISTICS)
    sums = ", ".join(f"SUM({name})" for name in STATISTICS)
    conn.execute(
        sa.text(
            f"INSERT INTO cumulative_aggregates (experiment, variant, metric, partition, "
            f"{columns}, source_offset) SELECT experiment, variant, metric, partition, "
            f"{sums}, MAX(source_offset) FROM window_aggregates "
            "GROUP BY experiment, variant, metric, partition"
        )
    )
    conn.execute(sa.text("ANALYZE"))


def window_sum(engine: sa.Engine, keys: list[str]) -> int:
    """The analyzer's read before totals: every window row of every running experiment."""
    table = WindowAggregateRow
    query = (
        sa.select(
            table.experiment,
            table.variant,
            table.metric,
            *(sa.func.sum(getattr(table, name)) for name in STATISTICS),
        )
        .where(table.experiment.in_(keys))
        .group_by(table.experiment, table.variant, table.metric)
    )
    with engine.connect() as conn:
        return len(conn.execute(query).all())


def timed(call: Callable[[], object], looks: int) -> float:
    call()  # warm: caches, plans
    durations = []
    for _ in range(looks):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def measure(
    cluster_url: str, admin: sa.Engine, windows: int, experiments: int, looks: int
) -> tuple[float, float]:
    """A database of its own with ``windows`` hourly windows: (one look, the window sum)."""
    name = f"scale_{windows}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = cluster_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(engine, parse_catalog(catalog(experiments)))
    started = time.perf_counter()
    rows = fill(engine, experiments, windows)
    print(f"{windows} windows: {rows:,} window rows made in {time.perf_counter() - started:.0f}s")
    keys = [f"exp-{i}" for i in range(experiments)]
    moments = (datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=5 * k) for k in count())
    try:
        return (
            timed(lambda: analyze_once(engine, 0.05, 0.05, next(moments)), looks),
            timed(lambda: window_sum(engine, keys), looks),
        )
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=5)
    args = parser.parse_args()
    cluster = PostgresCluster().start()
    admin = sa.create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    figures: dict[int, tuple[float, float]] = {}
    try:
        for windows in (24, 720):
            figures[windows] = measure(cluster.url, admin, windows, args.experiments, args.looks)
    finally:
        admin.dispose()
        cluster.stop()
    comparisons = args.experiments * 5
    print(
        f"{args.experiments} experiments × 2 arms × 5 metrics × {PARTITIONS} partitions "
        f"({comparisons:,} comparisons), median of {args.looks} looks:"
    )
    for windows, (look, summed) in figures.items():
        print(
            f"  {windows:>3} windows: one look {look:.3f}s; "
            f"summing the window rows alone (before totals) {summed:.3f}s"
        )
    print(
        f"  720/24: look {figures[720][0] / figures[24][0]:.2f}×, "
        f"window sum {figures[720][1] / figures[24][1]:.2f}×"
    )


if __name__ == "__main__":
    main()
