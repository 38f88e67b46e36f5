"""Through the real broker and SQL: a regression is rolled back and alerted exactly once, an A/A
with the same traffic is not; an alert survives a SIGKILL between the rollback commit and the
Kafka send, and one that reached Kafka but was never marked sent is not sent twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.orm import Session

from config.catalog import parse_catalog
from jobs.analyzer import analyze_once
from jobs.simulate import Effects, Traffic, simulate
from pipelines.topics import Topics
from sinks.alert_publisher import AlertPublisher
from sinks.sql.models import AlertOutboxRow, AlertRow, AuditRow, FlagRow
from tests.conftest import Broker
from tests.jobs.conftest import users, write_users
from tests.pipeline.conftest import XPSTREAM, load_catalog, pipeline_env, xpstream

GUARDRAIL = {
    "metric": "errors",
    "bad_direction": "increase",
    "margin": 0.0,
    "min_users": 500,
    "action": "rollback",
}
TWINS: dict[str, Any] = {
    "metrics": [
        {"key": "purchase", "kind": "conversion"},
        {"key": "revenue", "kind": "sum"},
        {"key": "orders", "kind": "count"},
        {"key": "errors", "kind": "count", "higher_is_better": False},
    ],
    "flags": [{"key": "regression-flag"}, {"key": "aa-flag"}],
    "experiments": [
        {
            "key": key,
            "flag": f"{key}-flag",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["purchase"],
            "guardrails": [GUARDRAIL],
        }
        for key in ("regression", "aa")
    ],
}


async def consume_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.assignment())
        assert partitions, f"{topic} does not exist"
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            assert time.monotonic() < deadline, "could not read the alerts topic to its end"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def test_regression_rolled_back_aa_not_one_alert(apache_kafka: Broker, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/xp.db"
    env = pipeline_env(apache_kafka, database)
    load_catalog(env, TWINS, tmp_path)
    catalog = parse_catalog(TWINS)
    effects = Effects(errors={("regression", "treatment"): 1.30})
    events = simulate(catalog, Traffic(users=5000, start_ts=1_764_000_000.0, seed=11), effects)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")

    replayed = xpstream(env, "replay", str(path), "--json", timeout=600)
    assert replayed.returncode == 0, replayed.stderr[-8000:]
    counts = json.loads(replayed.stdout)
    assert counts["rolled_back"] == ["regression-flag"] and counts["alerts"] == 1

    topic = Topics.of(env["XPSTREAM_NAMESPACE"]).alerts
    [record] = asyncio.run(consume_all(apache_kafka.bootstrap, topic))
    published = orjson.loads(record.value)
    assert record.key == b"regression-flag"
    listed = json.loads(xpstream(env, "alerts", "--json").stdout)
    assert listed == [published]
    assert published["kind"] == "guardrail_breach" and published["action_taken"] == "rollback"
    assert (published["experiment"], published["metric"]) == ("regression", "errors")
    assert published["rel_ci"][0] > 0  # the always-valid interval is wholly on the bad side

    engine = sa.create_engine(database)
    with Session(engine) as session:
        flags = {f.key: f.rolled_back_at for f in session.scalars(sa.select(FlagRow))}
        assert flags["regression-flag"] is not None and flags["aa-flag"] is None
        [audit] = session.scalars(sa.select(AuditRow)).all()
        assert audit.actor == "guardrail:regression/errors"
        assert audit.entity_key == "regression-flag"
        [row] = session.scalars(sa.select(AlertRow)).all()
        assert row.alert_id == published["alert_id"]
    engine.dispose()

    report = json.loads(xpstream(env, "report", "aa", "--format", "json").stdout)
    assert [g["status"] for g in report["guardrails"]] != ["breached"]
    assert report["flag"] == {"key": "aa-flag", "rolled_back": False}
    report = json.loads(xpstream(env, "report", "regression", "--format", "json").stdout)
    assert report["guardrails"][0]["action_taken"] == "rollback"
    assert report["flag"] == {"key": "regression-flag", "rolled_back": True}


def _breach_database(tmp_path: Path) -> tuple[str, sa.Engine]:
    from config.catalog import parse_catalog as parse
    from sinks.sql.migrate import upgrade_to_head
    from sinks.sql.store import make_engine, save_catalog
    from tests.jobs.conftest import GUARDED

    url = f"sqlite:///{tmp_path}/breach.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(engine, parse(GUARDED))
    write_users(engine, users(1500, {"control": 0.6, "treatment": 0.9}, seed=5))
    return url, engine


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _rows(engine: sa.Engine, table: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(table)))


def test_sigkill_between_commit_and_send_publishes_once(
    apache_kafka: Broker, tmp_path: Path
) -> None:
    url, engine = _breach_database(tmp_path)
    env = pipeline_env(apache_kafka, url, XPSTREAM_ANALYSIS_INTERVAL_SECONDS="0.3")
    topic = Topics.of(env["XPSTREAM_NAMESPACE"]).alerts

    analyzer = subprocess.Popen([XPSTREAM, "run", "--only", "analyzer"], env=env)
    try:
        _wait_for(lambda: len(_rows(engine, AlertRow)) == 1)
    finally:
        analyzer.send_signal(signal.SIGKILL)
        analyzer.wait()
    assert asyncio.run(consume_all(apache_kafka.bootstrap, topic)) == []
    [pending] = _rows(engine, AlertOutboxRow)
    assert pending.sent_at is None

    publisher = subprocess.Popen([XPSTREAM, "run", "--only", "publisher"], env=env)
    try:
        _wait_for(lambda: _rows(engine, AlertOutboxRow)[0].sent_at is not None)
    finally:
        publisher.send_signal(signal.SIGTERM)
        assert publisher.wait(timeout=30) == 0
    records = asyncio.run(consume_all(apache_kafka.bootstrap, topic))
    assert [orjson.loads(r.value)["alert_id"] for r in records] == [pending.alert_id]
    engine.dispose()


def test_alert_on_kafka_but_not_marked_is_not_sent_again(
    apache_kafka: Broker, tmp_path: Path
) -> None:
    _url, engine = _breach_database(tmp_path)
    topic = f"t{time.monotonic_ns()}.guardrail-alerts"
    [alert] = analyze_once(engine, 0.05, 0.05).alerts
    [pending] = _rows(engine, AlertOutboxRow)

    async def crash_after_ack_then_restart() -> int:
        # What a publisher that died after Kafka's ack, before marking the row, left behind.
        producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait(topic, pending.payload.encode(), key=b"banner")
        await producer.stop()
        publisher = AlertPublisher(engine, apache_kafka.bootstrap, topic)
        await publisher.start()
        try:
            return await publisher.publish_pending()
        finally:
            await publisher.stop()

    assert asyncio.run(crash_after_ack_then_restart()) == 0
    records = asyncio.run(consume_all(apache_kafka.bootstrap, topic))
    assert [orjson.loads(r.value)["alert_id"] for r in records] == [alert["alert_id"]]
    [marked] = _rows(engine, AlertOutboxRow)
    assert (marked.sent_partition, marked.sent_offset) == (records[0].partition, records[0].offset)
    engine.dispose()
