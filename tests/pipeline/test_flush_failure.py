"""A flush whose SQL write fails loses nothing: the database is made unwritable for a while
(triggers that abort every write of the flush's tables, in a real SQLite database), the worker
keeps running, and once the triggers are gone the totals equal the pandas ground truth."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import sqlalchemy as sa

from config.settings import Settings
from jobs.replay import produce_lines, wait_until_flushed
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import build_pipeline
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine
from tests.conftest import Broker
from tests.pipeline.conftest import load_catalog, pipeline_env
from tests.pipeline.generate import CATALOG, generate
from tests.pipeline.test_ground_truth import check_against_ground_truth

FLUSHED_TABLES = ("window_aggregates", "pipeline_counters", "partition_offsets")


def set_unwritable(engine: sa.Engine, unwritable: bool) -> None:
    with engine.begin() as conn:
        for table in FLUSHED_TABLES:
            for when in ("INSERT", "UPDATE"):
                name = f"refuse_{table}_{when.lower()}"
                if unwritable:
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER {name} BEFORE {when} ON {table} "
                        "BEGIN SELECT RAISE(ABORT, 'database unwritable (test)'); END"
                    )
                else:
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")


def test_a_failed_flush_loses_no_keys(tansu: Broker, tmp_path: Path) -> None:
    event_file = generate(users=1500, seed=5)
    database = f"sqlite:///{tmp_path}/xp.db"
    load_catalog(pipeline_env(tansu, database), CATALOG, tmp_path)
    settings = Settings(
        namespace=f"t{uuid.uuid4().hex[:10]}",
        partitions=4,
        database_url=database,
        kafka_flavor="tansu",
        flush_seconds=0.5,
    )
    upgrade_to_head(database)
    engine = make_engine(database)
    set_unwritable(engine, True)

    async def run() -> int:
        topics = Topics.of(settings.namespace)
        await ensure_topics(tansu.bootstrap, topics.layout(settings.partitions))
        pipeline = build_pipeline(settings, tansu.bootstrap, engine)
        await pipeline.app.start()
        try:
            lines = [line.encode() for line in event_file.lines]
            targets = await produce_lines(settings, tansu.bootstrap, lines)
            await asyncio.sleep(5)  # every flush of these seconds fails
            failures = pipeline.flusher.outage.failures
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM window_aggregates").scalar() == 0
            set_unwritable(engine, False)
            await wait_until_flushed(engine, topics.events, targets, timeout=120)
            assert pipeline.flusher.outage.failures == 0  # recovered
            return failures
        finally:
            await pipeline.app.stop()

    assert asyncio.run(run()) >= 2
    check_against_ground_truth(engine, event_file)
    engine.dispose()
