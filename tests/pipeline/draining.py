"""Run an in-process worker until everything already on the events topic is flushed to SQL."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from sqlalchemy import Engine

from config.settings import Settings
from jobs.replay import wait_until_flushed
from pipelines.topics import Topics
from pipelines.worker import build_pipeline


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The last offset of each non-empty partition of ``topic``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(sorted(consumer.assignment()))
        return {tp.partition: offset - 1 for tp, offset in ends.items() if offset > 0}
    finally:
        await consumer.stop()


async def drain_pipeline(
    settings: Settings, bootstrap: str, engine: Engine, timeout: float = 300
) -> None:
    topics = Topics.of(settings.namespace)
    pipeline = build_pipeline(settings, bootstrap, engine)
    await pipeline.app.start()
    try:
        targets = await end_offsets(bootstrap, topics.events)
        await wait_until_flushed(engine, topics.events, targets, timeout=timeout)
    finally:
        await pipeline.app.stop()
