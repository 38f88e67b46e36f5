"""`xpstream replay FILE.jsonl`: every line through the pipeline, then wait until flushed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine

from config.settings import Settings
from jobs.analyzer import Look, analyze_once
from pipelines.producer import send_envelopes
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import build_pipeline
from sinks.alert_publisher import AlertPublisher
from sinks.opensearch.sink import (
    OpenSearchSink,
    OpenSearchUnavailableError,
    make_client,
)
from sinks.opensearch.sink import backlog as search_backlog
from sinks.sql.store import counter_totals, flushed_offsets

Progress = Callable[[int, int], None]


def read_lines(path: Path) -> list[bytes]:
    with path.open("rb") as handle:
        return [line.rstrip(b"\r\n") for line in handle if line.strip()]


def pipeline_counters(engine: Engine) -> dict[str, Any]:
    dead = counter_totals(engine, "dead_lettered")
    return {
        "applied": counter_totals(engine, "applied").get("", 0.0),
        "duplicates": counter_totals(engine, "duplicates").get("", 0.0),
        "by_reason": dead,
    }


async def wait_until_flushed(
    engine: Engine,
    topic: str,
    targets: dict[int, int],
    timeout: float,
    progress: Progress | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    total = sum(offset + 1 for offset in targets.values())
    while True:
        flushed = await asyncio.to_thread(flushed_offsets, engine, topic)
        done = sum(min(flushed.get(p, -1), last) + 1 for p, last in targets.items())
        if progress:
            progress(done, total)
        if all(flushed.get(p, -1) >= last for p, last in targets.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"pipeline flushed {flushed} of {targets} within {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def produce_lines(settings: Settings, bootstrap: str, lines: list[bytes]) -> dict[int, int]:
    topics = Topics.of(settings.namespace)
    await ensure_topics(bootstrap, topics.layout(settings.partitions))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024, acks="all"
    )
    await producer.start()
    try:
        return await send_envelopes(producer, topics.events, lines, settings.partitions)
    finally:
        await producer.stop()


async def analyse_and_publish(settings: Settings, bootstrap: str, engine: Engine) -> Look:
    """One analyzer look, then publish whatever alerts are waiting in the outbox."""
    look = await asyncio.to_thread(
        analyze_once, engine, settings.alpha, settings.tau, None, bool(settings.opensearch_url)
    )
    publisher = AlertPublisher(engine, bootstrap, Topics.of(settings.namespace).alerts)
    await publisher.start()
    try:
        await publisher.publish_pending()
    finally:
        await publisher.stop()
    return look


async def replay(
    settings: Settings,
    bootstrap: str,
    engine: Engine,
    lines: list[bytes],
    *,
    timeout: float = 600.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run an in-process worker, send the lines, wait for their flush, analyse once and publish
    any alert; counts are this run's."""
    before = pipeline_counters(engine)
    topics = Topics.of(settings.namespace)
    await ensure_topics(bootstrap, topics.layout(settings.partitions))
    pipeline = build_pipeline(settings, bootstrap, engine)
    await pipeline.app.start()
    try:
        targets = await produce_lines(settings, bootstrap, lines)
        await wait_until_flushed(engine, topics.events, targets, timeout, progress)
    finally:
        await pipeline.app.stop()
    look = await analyse_and_publish(settings, bootstrap, engine)
    if settings.opensearch_url:
        sink = OpenSearchSink(engine, make_client(settings), settings.opensearch_prefix)
        with contextlib.suppress(OpenSearchUnavailableError):  # the rows stay queued
            await asyncio.to_thread(sink.drain)
    after = pipeline_counters(engine)
    by_reason = {
        reason: int(count - before["by_reason"].get(reason, 0.0))
        for reason, count in after["by_reason"].items()
    }
    by_reason = {reason: count for reason, count in sorted(by_reason.items()) if count}
    return {
        "events": len(lines),
        "applied": int(after["applied"] - before["applied"]),
        "duplicates": int(after["duplicates"] - before["duplicates"]),
        "dead_lettered": sum(by_reason.values()),
        "by_reason": by_reason,
        "alerts": len(look.alerts),
        "rolled_back": look.rolled_back,
        "search_backlog": search_backlog(engine) if settings.opensearch_url else 0,
    }
