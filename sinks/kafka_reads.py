"""Reading Kafka partitions up to an end offset: the one loop behind the pipeline's changelog
restore and skipped-offset reads and the alert publisher's read-back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


@asynccontextmanager
async def committed_reader(broker_url: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less read_committed consumer for one read: nothing is left running after it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_url, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def read_until(
    consumer: AIOKafkaConsumer,
    ends: Mapping[TopicPartition, int],
    idle_fetches: int | None = None,
    max_records: int | None = None,
) -> AsyncIterator[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    """Batches of records of each partition in ``ends``, from where the consumer stands until
    its position reaches the partition's end. ``idle_fetches``: stop after that many empty
    fetches in a row, for brokers that report an end past the last record (Tansu); ``None``
    reads to the end however long it takes (a restore must not stop short)."""
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    idle = 0
    while pending and (idle_fetches is None or idle < idle_fetches):
        batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=max_records)
        idle = 0 if batches else idle + 1
        for tp, records in batches.items():
            yield tp, records
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
