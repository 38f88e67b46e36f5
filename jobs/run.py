"""`xpstream run`: Faust workers (a real faust.Worker, so exactly-once transactions apply), the
analyzer loop, the alert publisher and the scheduler — together, or each alone for scaling
out."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable
from typing import Any, Literal

import faust
from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine

from config.settings import Settings
from jobs.analyzer import Look, run_analyzer
from jobs.scheduler import run_scheduler
from pipelines.embedded_broker import broker_url
from pipelines.kinesis import KinesisBridge, kinesis_client
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import build_pipeline
from sinks.alert_publisher import AlertPublisher
from sinks.opensearch.sink import OpenSearchSink, make_client
from sinks.quiet_logs import configure_logging
from sinks.sql.leases import Lease
from sinks.sql.migrate import migrated_engine
from sinks.sql.results import HistoryRetention
from stats.analysis import AnalysisOptions

Role = Literal["all", "workers", "analyzer", "publisher", "shipper", "scheduler"]
ROLES: tuple[Role, ...] = ("all", "workers", "analyzer", "publisher", "shipper", "scheduler")
# A lease lasts this many of its role's intervals: a dead leader's follower, trying every half
# interval, leads within two.
LEASE_INTERVALS = 1.5


async def analyzer_and_publisher(
    settings: Settings,
    bootstrap: str,
    engine: Engine,
    stop: asyncio.Event,
    only: Role,
    on_alerts: Callable[[Look], None] | None = None,
) -> None:
    """The analyzer wakes the publisher as soon as a look writes alerts; the scheduler, and the
    OpenSearch shipper when XPSTREAM_OPENSEARCH_URL is set, run beside them."""
    wake = asyncio.Event()

    def alerted(look: Look) -> None:
        wake.set()
        if on_alerts is not None:
            on_alerts(look)

    jobs = []
    publisher = None
    analysis, scheduling = settings.analysis_interval_seconds, settings.scheduler_interval_seconds
    if only in ("all", "publisher"):
        publisher = AlertPublisher(engine, bootstrap, Topics.of(settings.namespace).alerts)
        await publisher.start()
        lease = Lease(engine, "publisher", LEASE_INTERVALS * analysis)
        jobs.append(publisher.run(stop, wake, poll_seconds=analysis, lease=lease))
    if only in ("all", "analyzer"):
        jobs.append(
            run_analyzer(
                engine,
                settings.alpha,
                settings.tau,
                analysis,
                stop,
                on_alerts=alerted,
                search_outbox=bool(settings.opensearch_url),
                retention=HistoryRetention(
                    settings.history_full_hours, settings.history_every_seconds
                ),
                lease=Lease(engine, "analyzer", LEASE_INTERVALS * analysis),
            )
        )
    if only in ("all", "scheduler"):
        options = AnalysisOptions(settings.alpha, settings.tau)
        lease = Lease(engine, "scheduler", LEASE_INTERVALS * scheduling)
        jobs.append(run_scheduler(engine, options, scheduling, stop, lease=lease))
    if only in ("all", "shipper") and settings.opensearch_url:
        sink = OpenSearchSink(engine, make_client(settings), settings.opensearch_prefix)
        jobs.append(sink.run(stop, lease=Lease(engine, "shipper", LEASE_INTERVALS * 1.0)))
    try:
        await asyncio.gather(*jobs)
    finally:
        if publisher is not None:
            await publisher.stop()


async def _standalone(settings: Settings, bootstrap: str, engine: Engine, only: Role) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await analyzer_and_publisher(settings, bootstrap, engine, stop, only)


def run(settings: Settings, only: Role) -> None:
    configure_logging(settings.log_level)
    if only == "scheduler":  # the database is all it needs
        with migrated_engine(settings.database_url, wait=True) as engine:
            asyncio.run(_standalone(settings, "", engine, only))
        return
    with (
        migrated_engine(settings.database_url, wait=True) as engine,
        broker_url(settings.kafka_url) as bootstrap,
    ):
        topics = Topics.of(settings.namespace)
        asyncio.run(ensure_topics(bootstrap, topics.layout(settings.partitions)))
        if only in ("analyzer", "publisher", "shipper"):
            asyncio.run(_standalone(settings, bootstrap, engine, only))
            return
        pipeline = build_pipeline(settings, bootstrap, engine, state_store=settings.state_store)
        if only == "all":
            stop = asyncio.Event()

            @pipeline.app.task
            async def _analysis() -> None:
                await analyzer_and_publisher(settings, bootstrap, engine, stop, "all")

            @pipeline.app.on_before_shutdown.connect  # type: ignore[arg-type]
            async def _stop_analysis(sender: Any, **_: Any) -> None:
                stop.set()

        worker = faust.Worker(
            pipeline.app,
            loglevel=settings.log_level,
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
        )
        # A unit of work holds up to 256 envelopes of live events: at CPython's default
        # threshold (700) young collections promote them into full collections, which took
        # a fifth of a worker's time at 500k events. Modules and app are built: freeze them.
        gc.freeze()
        gc.set_threshold(10_000, 20, 100)
        worker.execute_from_commandline()


def run_kinesis_bridge(
    settings: Settings, stream: str, region: str | None, lease_seconds: float = 10.0
) -> None:
    """`xpstream kinesis-bridge`: forward a Kinesis stream into the events topic until stopped."""
    topics = Topics.of(settings.namespace)

    async def bridge(bootstrap: str, engine: Engine) -> None:
        await ensure_topics(bootstrap, topics.layout(settings.partitions))
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
        )
        await producer.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            client = kinesis_client(settings.aws_endpoint_url, region)
            await KinesisBridge(
                client,
                engine,
                producer,
                stream,
                topics.events,
                settings.partitions,
                lease_seconds=lease_seconds,
            ).run(stop)
        finally:
            await producer.stop()

    with (
        migrated_engine(settings.database_url, wait=True) as engine,
        broker_url(settings.kafka_url) as bootstrap,
    ):
        asyncio.run(bridge(bootstrap, engine))
