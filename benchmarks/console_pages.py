"""Server time of the console's pages on PostgreSQL 15: experiments with 10 metrics × 8
partitions and 720 hourly windows, one with 2 variants (115,200 window rows) and one with 3
(172,800), one analyzer look stored, beside 98 other running experiments with 24 windows.
Each page is requested through the app in process (no network, no browser): the median of
--requests requests after one warm-up, and the same for the JSON report and lift endpoints the
page is built from. A page keeps an experiment's effect over time until the next flush moves an
offset: the results pages are also timed with that cache emptied before each request.

Run: PYTHONPATH=. .venv/bin/python benchmarks/console_pages.py [--requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from api.console.session import COOKIE
from benchmarks.analyzer_scale import sum_totals
from config.catalog import parse_catalog
from config.settings import Settings
from jobs.analyzer import analyze_once
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog
from stats.sufficient import STATISTICS
from tests.services.postgres import PostgresCluster

METRICS = [f"m{i}" for i in range(10)]
VARIANTS = ["control", "b", "c"]


def variants(experiment: int) -> list[str]:
    return VARIANTS if experiment == 1 else VARIANTS[:2]


PARTITIONS = 8


def catalog(experiments: int) -> dict[str, object]:
    return {
        "metrics": [{"key": m, "kind": "sum"} for m in METRICS],
        "experiments": [
            {
                "key": f"exp-{i}",
                "control": "control",
                "variants": [{"key": v, "weight": 1 / len(variants(i))} for v in variants(i)],
                "metrics": METRICS,
            }
            for i in range(experiments)
        ],
    }


def fill(engine: sa.Engine, experiment: int, windows: int) -> None:
    columns = ", ".join(STATISTICS)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"""
                INSERT INTO window_aggregates (experiment, variant, metric, window_start,
                    partition, {columns}, source_offset)
                SELECT 'exp-' || :e, v, m, 1700000000 + 3600 * w, p,
                    n, n * (0.7 + 0.01 * (v = 'b')::int), n * 0.9, n * 0.6, n * 0.8, n * 0.5,
                    0, 0, 0, w
                FROM unnest(CAST(:variants AS text[])) AS v,
                    unnest(CAST(:metrics AS text[])) AS m,
                    generate_series(0, :windows - 1) AS w,
                    generate_series(0, {PARTITIONS - 1}) AS p,
                    LATERAL (SELECT 40.0 + (w + p) % 7 AS n) AS s
                """
            ),
            {
                "e": experiment,
                "windows": windows,
                "variants": variants(experiment),
                "metrics": METRICS,
            },
        )


def timed(
    client: TestClient, path: str, requests: int, clear: Any = None, **kwargs: object
) -> float:
    """``clear``: an ApiState whose effect-over-time cache is emptied before each request,
    as a flush of new window rows does."""
    assert client.get(path, **kwargs).status_code == 200, path
    durations = []
    for _ in range(requests):
        if clear is not None:
            clear.lift_cache.clear()
        started = time.perf_counter()
        response = client.get(path, **kwargs)
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200, path
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    cluster = PostgresCluster().start()
    try:
        upgrade_to_head(cluster.url)
        engine = make_engine(cluster.url)
        save_catalog(engine, parse_catalog(catalog(100)))
        for experiment in range(100):
            fill(engine, experiment, 720 if experiment < 2 else 24)
        with engine.begin() as conn:
            sum_totals(conn)
        analyze_once(engine, 0.05, 0.05, datetime.now(UTC))
        key = create_api_key(engine, "admin", "benchmark")
        settings = Settings(database_url=cluster.url, namespace="bench", partitions=PARTITIONS)
        client = TestClient(create_app(settings, engine, ""))
        client.cookies.set(COOKIE, key, path="/ui")
        bearer = {"headers": {"Authorization": f"Bearer {key}"}}
        pages = {
            "results, 2 arms, 720 windows": "/ui/experiments/exp-0",
            "results, 3 arms, 720 windows": "/ui/experiments/exp-1",
            "results, 2 arms, 24 windows": "/ui/experiments/exp-2",
            "experiments list (100)": "/ui/experiments",
            "flags": "/ui/flags",
            "alerts and audit": "/ui/alerts",
        }
        print(
            f"PostgreSQL 15; {len(METRICS)} metrics × {PARTITIONS} partitions; median of "
            f"{args.requests} requests (server time, in process):"
        )
        for name, path in pages.items():
            print(f"  {name:<28} {timed(client, path, args.requests) * 1000:7.1f} ms")
        state = client.app.state.xp  # type: ignore[attr-defined]
        for name in ("results, 2 arms, 720 windows", "results, 3 arms, 720 windows"):
            cold = timed(client, pages[name], args.requests, clear=state)
            print(f"  {name}, after a flush: {cold * 1000:7.1f} ms (nothing cached)")
        for name, path in {
            "API report, 720 windows": "/v1/experiments/exp-0/report",
            "API lift, 720 windows": "/v1/experiments/exp-0/lift",
        }.items():
            print(f"  {name:<28} {timed(client, path, args.requests, **bearer) * 1000:7.1f} ms")
        engine.dispose()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
