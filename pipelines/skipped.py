"""Offsets the Faust stream skipped, and reading them straight from the broker.

Faust's consumer can mark fetched messages as read without handing them to the agent when a
recovery seek races its drain loop (its `_drain_messages` drops them once ``suspend_flow`` is
set, or as below the read offset); seen here after about one SIGKILL restart in ten. The
pipeline therefore checks that the offsets it applies to a partition are contiguous and reads
any hole itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition


def missing_ranges(last: int, offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive ranges of offsets after ``last`` (the highest applied) and below the highest
    of ``offsets`` that ``offsets`` lacks; offsets at or below ``last`` are redeliveries."""
    ranges = []
    expected = last + 1
    for offset in sorted(set(offsets)):
        if offset > expected:
            ranges.append((expected, offset - 1))
        expected = max(expected, offset + 1)
    return ranges


@asynccontextmanager
async def _reader(broker_url: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A read_committed consumer for one read: holes are rare, and nothing is left running."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_url, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def first_offset(broker_url: str, topic: str, partition: int) -> int:
    tp = TopicPartition(topic, partition)
    async with _reader(broker_url) as consumer:
        return int((await consumer.beginning_offsets([tp]))[tp])


async def read_range(
    broker_url: str, topic: str, partition: int, first: int, last: int
) -> tuple[list[tuple[int, bytes]], int]:
    """Committed messages with offsets first..last (transaction markers have none), and the
    highest offset the read covers: none past the last stable offset, whose records may
    still be committed and delivered."""
    tp = TopicPartition(topic, partition)
    messages: list[tuple[int, bytes]] = []
    async with _reader(broker_url) as consumer:
        end = min(last + 1, (await consumer.end_offsets([tp]))[tp])
        consumer.assign([tp])
        consumer.seek(tp, first)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            messages.extend(
                (m.offset, m.value)
                for m in batch.get(tp, ())
                if first <= m.offset < end and m.value is not None
            )
    return messages, end - 1
