"""`xpstream run`: Faust workers (a real faust.Worker, so exactly-once transactions apply)."""

from __future__ import annotations

import asyncio

import faust

from config.settings import Settings
from pipelines.embedded_broker import broker_url
from pipelines.topics import ensure_topics
from pipelines.worker import Topics, build_pipeline
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine


def run_workers(settings: Settings) -> None:
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    with broker_url(settings.kafka_url) as bootstrap:
        topics = Topics.of(settings.namespace)
        asyncio.run(
            ensure_topics(bootstrap, {topics.events: settings.partitions, topics.dead_letter: 1})
        )
        pipeline = build_pipeline(settings, bootstrap, engine)
        worker = faust.Worker(
            pipeline.app,
            loglevel="WARNING",
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
        )
        worker.execute_from_commandline()
