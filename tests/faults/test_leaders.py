"""Replicated singletons on PostgreSQL 15 and Apache Kafka: two analyzers, two schedulers and
two publishers (`xpstream run --only …` processes). A regression is rolled back once, with one
audit row and one alert consumed from Kafka; a scheduled start is applied once. The leading
analyzer SIGKILLed, its follower leads within two intervals and handles the next breach once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from config.catalog import parse_catalog
from pipelines.topics import Topics
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import AlertRow, AuditRow, LeaseRow
from sinks.sql.store import make_engine, save_catalog
from tests.conftest import Broker
from tests.jobs.conftest import GUARDED, users, write_users
from tests.jobs.test_alerts_kafka import consume_all
from tests.pipeline.conftest import XPSTREAM, pipeline_env
from tests.pipeline.test_workers import stop

INTERVAL = 1.0


def catalog(start_at: datetime) -> dict[str, Any]:
    risky = GUARDED["experiments"][0]
    return {
        **GUARDED,
        "flags": [*GUARDED["flags"], {"key": "banner2"}],
        "experiments": [
            risky,
            {**risky, "key": "risky2", "flag": "banner2"},
            {
                "key": "timed",
                "status": "scheduled",
                "start_at": start_at.isoformat(),
                "control": "a",
                "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
            },
        ],
    }


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def alerts(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(AlertRow)).scalar_one())


def audits(engine: sa.Engine, action: str) -> int:
    query = sa.select(sa.func.count()).select_from(AuditRow).where(AuditRow.action == action)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def leader(engine: sa.Engine, role: str) -> int | None:
    """The pid of the replica leading ``role`` (owners are ``host:pid:nonce``)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(LeaseRow).where(LeaseRow.role == role)).first()
    if row is None or row.owner is None or row.expires_at < time.time():
        return None
    return int(row.owner.split(":")[1])


def test_one_leader_per_role_and_a_fast_takeover(
    apache_kafka: Broker, postgres_database: str, tmp_path: Path
) -> None:
    upgrade_to_head(postgres_database)
    engine = make_engine(postgres_database)
    save_catalog(engine, parse_catalog(catalog(datetime.now(UTC) + timedelta(seconds=6))))
    write_users(engine, users(1500, {"control": 0.6, "treatment": 0.9}, seed=5))
    env = pipeline_env(
        apache_kafka,
        postgres_database,
        XPSTREAM_ANALYSIS_INTERVAL_SECONDS=str(INTERVAL),
        XPSTREAM_SCHEDULER_INTERVAL_SECONDS=str(INTERVAL),
    )
    log = (tmp_path / "replicas.log").open("ab")
    processes = {
        (role, n): subprocess.Popen(
            [XPSTREAM, "run", "--only", role],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for role in ("analyzer", "scheduler", "publisher")
        for n in (0, 1)
    }
    by_pid = {p.pid: key for key, p in processes.items()}
    topic = Topics.of(env["XPSTREAM_NAMESPACE"]).alerts

    def alerts_on_kafka() -> list[dict[str, Any]]:
        return [
            orjson.loads(r.value) for r in asyncio.run(consume_all(apache_kafka.bootstrap, topic))
        ]

    try:
        wait_for(lambda: alerts(engine) == 1)
        wait_for(lambda: audits(engine, "experiment.start") == 1)
        time.sleep(2 * INTERVAL)  # every replica had its chances to act again
        assert audits(engine, "flag.rollback") == 1
        assert audits(engine, "experiment.start") == 1
        assert alerts(engine) == 1
        wait_for(lambda: len(alerts_on_kafka()) == 1)

        analyzer = leader(engine, "analyzer")
        assert analyzer in by_pid, (analyzer, by_pid)
        os.killpg(analyzer, signal.SIGKILL)
        killed = time.monotonic()
        taken = wait_for(lambda: leader(engine, "analyzer") not in (None, analyzer), 30)
        print(f"the follower led {taken:.2f}s after the leader was killed")
        assert time.monotonic() - killed <= 2 * INTERVAL + 1.0  # two intervals, and start-up

        regression = users(1500, {"control": 0.6, "treatment": 0.9}, seed=6)
        write_users(engine, regression, experiment="risky2")
        wait_for(lambda: alerts(engine) == 2)
        time.sleep(2 * INTERVAL)
        assert audits(engine, "flag.rollback") == 2
        assert alerts(engine) == 2
        wait_for(lambda: len(alerts_on_kafka()) == 2)
        assert sorted(a["flag"] for a in alerts_on_kafka()) == ["banner", "banner2"]
    finally:
        for process in processes.values():
            stop(process)
        log.close()
        engine.dispose()
    survivors = [p for p in processes.values() if p.pid != analyzer]
    assert all(p.returncode == 0 for p in survivors), (tmp_path / "replicas.log").read_text()[
        -3000:
    ]
