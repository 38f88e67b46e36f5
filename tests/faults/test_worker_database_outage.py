"""A worker through database outages (``xpstream run --only workers`` on Apache Kafka with
exactly-once, PostgreSQL 15 of its own): started while the database is down it waits for it;
the database stopped for 30 s mid-stream, the worker neither exits nor loses anything, logs a
few lines, and catches up by itself when the database returns. Totals equal pandas."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sinks.sql.store import flushed_offsets
from tests.conftest import Broker
from tests.pipeline.conftest import load_catalog, pipeline_env
from tests.pipeline.generate import CATALOG, EventFile, generate
from tests.pipeline.test_ground_truth import check_against_ground_truth
from tests.pipeline.test_workers import chunks_of, produce, start_worker, stop, wait_flushed
from tests.services.postgres import PostgresCluster

OUTAGE_SECONDS = 30.0


@pytest.fixture()
def cluster() -> Iterator[PostgresCluster]:
    # Not durable: a crash loses the last commits, as a failover to a lagging replica does;
    # the worker must write those rows again.
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_worker_rides_out_database_outages(
    apache_kafka: Broker, cluster: PostgresCluster, tmp_path: Path
) -> None:
    event_file: EventFile = generate(users=2500, seed=23)
    env = pipeline_env(apache_kafka, cluster.url)
    load_catalog(env, CATALOG, tmp_path)
    engine = sa.create_engine(cluster.url, pool_pre_ping=True)
    with engine.connect() as conn:  # the catalog is on disk before the first crash
        conn.execute(sa.text("CHECKPOINT"))
    log = tmp_path / "worker.log"
    cluster.crash()
    worker = start_worker(env, log)  # the database is down: the worker waits for it
    try:
        time.sleep(4)
        assert worker.poll() is None, log.read_text()[-3000:]
        cluster.resume()
        first, *rest = chunks_of(event_file, 4)
        targets = produce(env, first)
        wait_flushed(engine, env, targets)

        cluster.crash()
        outage_started = time.monotonic()
        log_before = len(log.read_text().splitlines())
        for chunk in rest:  # the stream goes on while the database is away
            for partition, offset in produce(env, chunk).items():
                targets[partition] = max(targets.get(partition, -1), offset)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
        assert worker.poll() is None, log.read_text()[-3000:]
        outage_lines = log.read_text().splitlines()[log_before:]
        cluster.resume()
        returned = time.monotonic()
        wait_flushed(engine, env, targets, timeout=120)
        print(f"caught up {time.monotonic() - returned:.1f}s after the database returned")
        assert worker.poll() is None
        assert len(outage_lines) < 20, outage_lines  # a warning per outage, not per flush
        check_against_ground_truth(engine, event_file)
        topic = f"{env['XPSTREAM_NAMESPACE']}.events"
        assert set(flushed_offsets(engine, topic)) == set(targets)
    finally:
        stop(worker)
        engine.dispose()
    assert worker.returncode == 0, log.read_text()[-3000:]
