"""Rollout schedules through the real pipeline (Apache Kafka, in-process worker, SQL) on
simulated traffic and a moved clock: an A/A schedule with metric triggers walks 1 → 5 → 10 →
25 → 50 → 100% and is released; a +30% ``errors`` regression is rolled back at the first look
that detects it, with exactly one alert consumed from Kafka, and everyone is served the old
value afterwards. The guardrail comes from the safety settings, not the schedule."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.flag_evaluation import evaluate
from api.state import CatalogSnapshot
from config.catalog import Guardrail, parse_catalog
from config.rollouts import RolloutIn
from config.safety import SafetySettings
from config.settings import Settings
from jobs.rollout_walk import Step, Walk, walk_rollout
from jobs.simulate import recent_start
from pipelines.events import EventBounds
from pipelines.topics import Topics
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import AuditRow, RolloutRow
from sinks.sql.rollouts import create_rollout
from sinks.sql.store import counter_totals, make_engine, save_catalog, write_safety
from tests.conftest import Broker
from tests.jobs.test_alerts_kafka import consume_all

PERCENTS = [1, 5, 10, 25, 50]
CATALOG: dict[str, Any] = {
    "metrics": [{"key": "errors", "kind": "count", "higher_is_better": False}],
    "flags": [{"key": "checkout-v2", "type": "string", "default": "v1"}],
}
SAFETY = SafetySettings(
    guardrails=(Guardrail(metric="errors", bad_direction="increase", min_users=150),)
)
ROLLOUT = RolloutIn.model_validate(
    {
        "flag": "checkout-v2",
        "value": "v2",
        "stages": [
            *(
                {"percent": p, "trigger": "metric", "min_users": 150, "min_duration_seconds": 3600}
                for p in PERCENTS
            ),
            {"percent": 100},
        ],
    }
)


def walk(broker: Broker, tmp_path: Path, factor: float) -> tuple[Settings, sa.Engine, list[Step]]:
    database = f"sqlite:///{tmp_path}/walk.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, parse_catalog(CATALOG))
    start = datetime.fromtimestamp(recent_start(), UTC)
    with Session(engine) as session, session.begin():
        write_safety(session, SAFETY, start)
        rollout_id = create_rollout(session, ROLLOUT, "test", start).id
    settings = Settings(
        database_url=database,
        kafka_url=broker.bootstrap,
        kafka_flavor="apache",
        namespace=f"w{uuid.uuid4().hex[:10]}",
        partitions=4,
        flush_seconds=0.3,
    )
    plan = Walk(users_per_step=20_000, step=timedelta(hours=1), max_steps=16, errors_factor=factor)
    steps = asyncio.run(walk_rollout(settings, broker.bootstrap, engine, rollout_id, start, plan))
    return settings, engine, steps


def served(engine: sa.Engine, users: int) -> set[Any]:
    snapshot = CatalogSnapshot.read(engine, EventBounds())
    flag = next(f for f in snapshot.catalog.flags if f.key == "checkout-v2")
    return {evaluate(snapshot, flag, f"someone-{n}", {}).value for n in range(users)}


def test_an_aa_rollout_walks_every_stage_and_is_released(
    apache_kafka: Broker, tmp_path: Path
) -> None:
    _settings, engine, steps = walk(apache_kafka, tmp_path, factor=1.0)
    assert steps[-1].state == "released", [(s.percent, s.state) for s in steps]
    assert sorted({s.percent for s in steps}) == PERCENTS  # every stage took traffic
    assert [s.percent for s in steps] == sorted(s.percent for s in steps)
    assert all(not s.alerts for s in steps)
    with Session(engine) as session:
        actions = session.scalars(
            sa.select(AuditRow.action).where(AuditRow.entity_type == "rollout")
        ).all()
    assert actions == ["rollout.create", *["rollout.advance"] * 4, "rollout.release"]
    assert served(engine, 2000) == {"v2"}
    exposed = sum(sum(s.exposed.values()) for s in steps)
    assert counter_totals(engine, "users")["rollout:checkout-v2:1"] == exposed  # none lost


def test_a_regression_is_rolled_back_once_with_one_alert_on_kafka(
    apache_kafka: Broker, tmp_path: Path
) -> None:
    settings, engine, steps = walk(apache_kafka, tmp_path, factor=1.3)
    last = steps[-1]
    assert last.state == "rolled_back", [(s.percent, s.state) for s in steps]
    assert last.percent < 100 and [s for s in steps if s.alerts] == [last]
    [record] = asyncio.run(
        consume_all(apache_kafka.bootstrap, Topics.of(settings.namespace).alerts)
    )
    alert = orjson.loads(record.value)
    assert alert == last.alerts[0]
    assert alert["kind"] == "guardrail_breach" and alert["action_taken"] == "rollback"
    assert (alert["rollout_schedule"], alert["stage"]) == (1, last.stage)
    assert (alert["metric"], alert["variant"]) == ("errors", "on")
    with Session(engine) as session:
        row = session.get_one(RolloutRow, 1)
        assert row.reason is not None and "guardrail errors breached" in row.reason
    assert served(engine, 2000) == {"v1"}
