"""`xpstream run` (workers, analyzer, publisher) through a Kafka broker outage, on an Apache
Kafka of its own SIGKILLed mid-stream and restarted 10 s later: no exit, totals equal pandas,
the regression in the traffic alerted once, and a few log lines at the default level instead of
a line per reconnection attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import sqlalchemy as sa

from pipelines.topics import Topics
from tests.conftest import Broker
from tests.jobs.test_alerts_kafka import consume_all
from tests.pipeline.conftest import load_catalog, pipeline_env
from tests.pipeline.generate import CATALOG, generate
from tests.pipeline.test_ground_truth import check_against_ground_truth
from tests.pipeline.test_workers import chunks_of, produce, start_worker, stop, wait_flushed
from tests.services.apache_kafka import ApacheKafka

OUTAGE_SECONDS = 10.0
# exp-c's +30% errors in "on", guarded: an alert is due while the broker comes and goes.
FLAGS = cast(list[dict[str, Any]], CATALOG["flags"])
EXPERIMENTS = cast(list[dict[str, Any]], CATALOG["experiments"])
GUARDED_C = {
    **CATALOG,
    "flags": [*FLAGS, {"key": "f3"}],
    "experiments": [
        {
            **e,
            "flag": "f3",
            "guardrails": [{"metric": "errors", "bad_direction": "increase", "min_users": 200}],
        }
        if e["key"] == "exp-c"
        else e
        for e in EXPERIMENTS
    ],
}


@pytest.fixture()
def kafka() -> Iterator[ApacheKafka]:
    broker = ApacheKafka().start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_worker_rides_out_a_broker_outage_quietly(kafka: ApacheKafka, tmp_path: Path) -> None:
    event_file = generate(users=5000, seed=31)
    database = f"sqlite:///{tmp_path}/xp.db"
    env = pipeline_env(
        Broker("kafka", kafka.bootstrap, transactions=True),
        database,
        XPSTREAM_ANALYSIS_INTERVAL_SECONDS="1",
    )
    load_catalog(env, GUARDED_C, tmp_path)
    engine = sa.create_engine(database)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, only="all")
    try:
        first, second, third = chunks_of(event_file, 3)
        targets = produce(env, first)
        wait_flushed(engine, env, targets)  # the worker is up and has state
        for partition, offset in produce(env, second).items():
            targets[partition] = max(targets.get(partition, -1), offset)
        time.sleep(0.5)  # mid-processing
        before = len(log.read_text().splitlines())
        kafka.crash()
        time.sleep(OUTAGE_SECONDS)
        kafka.resume()
        for partition, offset in produce(env, third).items():
            targets[partition] = max(targets.get(partition, -1), offset)
        wait_flushed(engine, env, targets, timeout=180)
        outage_lines = log.read_text().splitlines()[before:]
        assert worker.poll() is None, log.read_text()[-3000:]
        print(f"{len(outage_lines)} log lines from the outage to the catch-up")
        assert len(outage_lines) < 50, "\n".join(outage_lines[:80])
        check_against_ground_truth(engine, event_file)
        topic = Topics.of(env["XPSTREAM_NAMESPACE"]).alerts
        deadline = time.monotonic() + 60
        while not (alerts := asyncio.run(consume_all(kafka.bootstrap, topic))):
            assert time.monotonic() < deadline, "the regression was never alerted"
            time.sleep(1)
        time.sleep(3)  # looks and publisher passes after the alert: none sends it again
        [alert] = asyncio.run(consume_all(kafka.bootstrap, topic))
        assert (orjson.loads(alert.value)["experiment"], len(alerts)) == ("exp-c", 1)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar_one() == 1
    finally:
        stop(worker)
        engine.dispose()
