"""`xpstream run` as deployed: workers, analyzer, publisher and OpenSearch shipper in one process
against real Kafka, SQL and OpenSearch — a regression is rolled back, alerted and indexed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import sqlalchemy as sa
from opensearchpy import OpenSearch
from sqlalchemy.orm import Session

from config.catalog import parse_catalog
from config.settings import Settings
from jobs.replay import produce_lines
from jobs.simulate import Effects, Traffic, simulate
from pipelines.topics import Topics, ensure_topics
from sinks.sql.models import FlagRow
from tests.conftest import Broker
from tests.jobs.test_alerts_kafka import TWINS, consume_all
from tests.pipeline.conftest import XPSTREAM, load_catalog, pipeline_env


def test_run_rolls_back_alerts_and_indexes(
    apache_kafka: Broker, opensearch: str, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/run.db"
    prefix = f"r{uuid.uuid4().hex[:8]}"
    env = pipeline_env(
        apache_kafka,
        database,
        XPSTREAM_ANALYSIS_INTERVAL_SECONDS="1",
        XPSTREAM_OPENSEARCH_URL=opensearch,
        XPSTREAM_OPENSEARCH_PREFIX=prefix,
    )
    load_catalog(env, TWINS, tmp_path)
    settings = Settings(namespace=env["XPSTREAM_NAMESPACE"], partitions=4)
    topics = Topics.of(settings.namespace)
    asyncio.run(ensure_topics(apache_kafka.bootstrap, topics.layout(4)))
    effects = Effects(errors={("regression", "treatment"): 1.30})
    traffic = Traffic(users=5000, start_ts=1_764_000_000.0, seed=11)
    lines = [orjson.dumps(e) for e in simulate(parse_catalog(TWINS), traffic, effects)]

    run = subprocess.Popen([XPSTREAM, "run"], env=env, stderr=subprocess.PIPE)
    try:
        asyncio.run(produce_lines(settings, apache_kafka.bootstrap, lines))
        deadline = time.monotonic() + 120
        alerts: list[object] = []
        while not alerts:
            assert time.monotonic() < deadline, "no alert within 120 s"
            assert run.poll() is None, "xpstream run exited"
            alerts = asyncio.run(consume_all(apache_kafka.bootstrap, topics.alerts))
            time.sleep(0.5)
        client = OpenSearch([opensearch])
        indexed = 0
        while indexed == 0 and time.monotonic() < deadline:
            if client.indices.exists(index=f"{prefix}-alerts"):
                client.indices.refresh(index=f"{prefix}-alerts")
                indexed = client.count(index=f"{prefix}-alerts")["count"]
            time.sleep(0.5)
    finally:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr.decode()[-3000:]
    [record] = alerts
    alert = orjson.loads(record.value)  # type: ignore[attr-defined]
    assert (alert["experiment"], alert["action_taken"]) == ("regression", "rollback")
    assert indexed == 1
    engine = sa.create_engine(database)
    with Session(engine) as session:
        flags = {f.key: f.rolled_back_at for f in session.scalars(sa.select(FlagRow))}
    engine.dispose()
    assert flags["regression-flag"] is not None and flags["aa-flag"] is None
