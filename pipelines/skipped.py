"""Offsets the Faust stream skipped, and reading them straight from the broker.

Faust's consumer can mark fetched messages as read without handing them to the agent when a
recovery seek races its drain loop (its `_drain_messages` drops them once ``suspend_flow`` is
set, or as below the read offset); seen here after about one SIGKILL restart in ten. The
pipeline therefore checks that the offsets it applies to a partition are contiguous and reads
any hole itself.
"""

from __future__ import annotations

from collections.abc import Iterable

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


class RangeReader:
    """One read_committed consumer, started on first use, for the rare reads of skipped
    offsets (and of where a partition starts)."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.consumer: AIOKafkaConsumer | None = None

    async def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.broker_url,
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            await consumer.start()
            self.consumer = consumer
        return self.consumer

    async def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """The partition's first offset and its end (the next offset a committed record gets)."""
        consumer = await self._consumer()
        tp = TopicPartition(topic, partition)
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        return start, end

    async def read(
        self, topic: str, partition: int, first: int, last: int
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Committed messages with offsets first..last (transaction markers have none), and the
        highest offset the read covers: none past the last stable offset, whose records may
        still be committed and delivered."""
        consumer = await self._consumer()
        tp = TopicPartition(topic, partition)
        end = min(last + 1, (await consumer.end_offsets([tp]))[tp])
        consumer.assign([tp])
        consumer.seek(tp, first)
        messages: list[tuple[int, bytes]] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            messages.extend(
                (m.offset, m.value)
                for m in batch.get(tp, ())
                if first <= m.offset < end and m.value is not None
            )
        return messages, end - 1

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
