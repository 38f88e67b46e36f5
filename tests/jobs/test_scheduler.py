"""The scheduler on PostgreSQL 15: an experiment runs in exactly its scheduled period, through a
scheduler process SIGKILLed and restarted in between; schedulers running side by side apply each
transition once (one audit row each); a clock the test moves drives it in process."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from config.catalog import parse_catalog
from config.rollouts import RolloutIn
from jobs.scheduler import schedule_once
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import AuditRow
from sinks.sql.store import as_utc, catalog_version, load_catalog, make_engine, save_catalog
from stats.analysis import AnalysisOptions
from tests.pipeline.conftest import XPSTREAM

OPTIONS = AnalysisOptions(0.05, 0.05)
INTERVAL = 1.0


def catalog(start_at: datetime, end_at: datetime) -> dict[str, Any]:
    return {
        "metrics": [{"key": "purchase", "kind": "conversion"}],
        "experiments": [
            {
                "key": f"timed-{n}",
                "status": "scheduled",
                "start_at": (start_at + timedelta(seconds=n)).isoformat(),
                "end_at": (end_at + timedelta(seconds=n)).isoformat(),
                "control": "a",
                "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
                "metrics": ["purchase"],
            }
            for n in range(3)
        ],
    }


@pytest.fixture()
def engine(postgres_database: str) -> Engine:
    upgrade_to_head(postgres_database)
    return make_engine(postgres_database)


def audits(engine: Engine) -> list[tuple[str, str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditRow.entity_key, AuditRow.action, AuditRow.at)
            .where(AuditRow.actor == "scheduler")
            .order_by(AuditRow.id)
        )
        return [(key, action, as_utc(at)) for key, action, at in rows]


def test_a_moved_clock_starts_and_stops_on_schedule_and_two_schedulers_act_once(
    engine: Engine,
) -> None:
    t0 = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
    save_catalog(engine, parse_catalog(catalog(t0 + timedelta(hours=1), t0 + timedelta(days=7))))
    assert schedule_once(engine, OPTIONS, t0).transitions == []
    version = catalog_version(engine)
    assert schedule_once(engine, OPTIONS, t0 + timedelta(minutes=59)).transitions == []
    assert catalog_version(engine) == version  # nothing due: no version bump

    def together(now: datetime) -> list[tuple[str, str]]:
        barrier, applied = threading.Barrier(4), []

        def one() -> None:
            barrier.wait()
            applied.extend(schedule_once(engine, OPTIONS, now).transitions)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(applied)

    start = t0 + timedelta(hours=1, seconds=5)
    assert together(start) == [(f"timed-{n}", "start") for n in range(3)]
    stopped = together(t0 + timedelta(days=8))  # caught up after a week down
    assert stopped == [(f"timed-{n}", "stop") for n in range(3)]
    assert sorted((k, a) for k, a, _ in audits(engine)) == sorted(
        [(f"timed-{n}", "experiment.start") for n in range(3)]
        + [(f"timed-{n}", "experiment.stop") for n in range(3)]
    )
    for n, experiment in enumerate(load_catalog(engine).experiments):
        assert experiment.status == "stopped"
        assert experiment.started_at == t0 + timedelta(hours=1, seconds=n)  # the schedule's
        assert experiment.stopped_at == t0 + timedelta(days=7, seconds=n)


def scheduler(database_url: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "XPSTREAM_DATABASE_URL": database_url,
        "XPSTREAM_SCHEDULER_INTERVAL_SECONDS": str(INTERVAL),
        "XPSTREAM_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [XPSTREAM, "run", "--only", "scheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(engine: Engine, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while {e.status for e in load_catalog(engine).experiments} != {status}:
        assert time.monotonic() < deadline, f"not {status}: {load_catalog(engine).experiments}"
        time.sleep(0.1)


def test_real_schedulers_killed_and_restarted_run_the_experiment_in_its_period(
    engine: Engine, postgres_database: str
) -> None:
    now = datetime.now(UTC)
    start_at, end_at = now + timedelta(seconds=5), now + timedelta(seconds=11)
    save_catalog(engine, parse_catalog(catalog(start_at, end_at)))
    pair = [scheduler(postgres_database), scheduler(postgres_database)]
    try:
        wait_for(engine, "running")
        for process in pair:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        assert {e.status for e in load_catalog(engine).experiments} == {"running"}
        pair = [scheduler(postgres_database), scheduler(postgres_database)]
        wait_for(engine, "stopped")
    finally:
        for process in pair:
            process.terminate()
        outputs = [process.communicate(timeout=20)[0] for process in pair]
    assert all(p.returncode == 0 for p in pair), outputs
    rows = audits(engine)
    assert sorted((k, a) for k, a, _ in rows) == sorted(
        (f"timed-{n}", f"experiment.{a}") for n in range(3) for a in ("start", "stop")
    ), rows
    for key, action, at in rows:
        n = int(key.rsplit("-", 1)[1])
        due = (start_at if action == "experiment.start" else end_at) + timedelta(seconds=n)
        # applied within one interval of when it was due (and a start-up's worth of slack)
        assert due <= at <= due + timedelta(seconds=INTERVAL + 1.5), (key, action, at, due)
    for n, experiment in enumerate(load_catalog(engine).experiments):
        assert experiment.started_at == start_at + timedelta(seconds=n)
        assert experiment.stopped_at == end_at + timedelta(seconds=n)


def test_time_stages_advance_on_the_clock_and_a_manual_stage_waits(engine: Engine) -> None:
    from sinks.sql.models import RolloutRow
    from sinks.sql.rollouts import advance, create_rollout, locked_rollout

    save_catalog(
        engine, parse_catalog({"flags": [{"key": "beta", "type": "boolean", "default": False}]})
    )
    t0 = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
    rollout = RolloutIn.model_validate(
        {
            "flag": "beta",
            "value": True,
            "stages": [
                {"percent": 5, "trigger": "time", "min_duration_seconds": 3600},
                {"percent": 20, "trigger": "time", "at": (t0 + timedelta(days=2)).isoformat()},
                {"percent": 50, "trigger": "manual"},
                {"percent": 100},
            ],
        }
    )
    with Session(engine) as session, session.begin():
        rollout_id = create_rollout(session, rollout, "test", t0).id

    def stage_at(moment: datetime) -> int:
        schedule_once(engine, OPTIONS, moment)
        with Session(engine) as session:
            return session.get_one(RolloutRow, rollout_id).stage

    assert stage_at(t0 + timedelta(minutes=59)) == 0
    assert stage_at(t0 + timedelta(minutes=61)) == 1
    assert stage_at(t0 + timedelta(days=1)) == 1  # waits for its ``at``
    assert stage_at(t0 + timedelta(days=2, seconds=1)) == 2
    for days in (3, 30, 365):  # a manual stage waits, however long
        assert stage_at(t0 + timedelta(days=days)) == 2
    with Session(engine) as session, session.begin():
        advance(session, locked_rollout(session, rollout_id), "alice", t0, "looks good")
    assert stage_at(t0 + timedelta(days=400)) == 3
    with Session(engine) as session:
        row = session.get_one(RolloutRow, rollout_id)
        assert row.state == "released"
        flag = next(f for f in load_catalog(engine).flags if f.key == "beta")
        assert [r.model_dump(exclude_none=True) for r in flag.rules] == [
            {"id": f"rollout-{rollout_id}", "value": True, "hash_attribute": "id"}
        ]
