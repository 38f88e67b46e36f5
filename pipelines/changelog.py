"""The Faust internals the pipeline relies on, all in this module: changelog writes as whole
record batches on the producer Faust would use (the partition's transactional producer under
exactly-once), the offsets Faust committed, and acknowledging offsets the pipeline read around
the Faust stream; and changelog restore. Check these first when upgrading faust-streaming."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import faust
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.transport.consumer import TopicPartitionGroup, TransactionManager
from faust.types import TP, Message

from sinks.kafka_reads import committed_reader, read_until


async def send_records(
    app: faust.App,
    source: str,
    topic: str,
    partition: int,
    items: Sequence[tuple[bytes, bytes | None]],
    last_record_alone: bool = False,
) -> list[Any]:
    """Changelog records as whole record batches, sent for ``source``'s partition (read by the
    pipeline): one append each instead of one ``send`` coroutine per record, which costs more
    than the rest of the work. ``None`` values are tombstones. ``last_record_alone``:
    Tansu reports a partition's end as its newest batch's base offset + 1, so the last record
    alone in its batch keeps that end right after every write."""
    producer, transaction_lock = _producer_for(app, source, partition)
    groups = [items[:-1], items[-1:]] if last_record_alone else [items]
    acks = []
    async with transaction_lock:  # Faust commits under it: no batch lands mid-commit
        for group in filter(None, groups):
            batch = producer.create_batch()
            for key, value in group:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


def _producer_for(
    app: faust.App, source: str, partition: int
) -> tuple[AIOKafkaProducer, AbstractAsyncContextManager[Any]]:
    """The aiokafka producer Faust would send with for ``source``'s partition, and the lock
    Faust holds while it commits: under exactly-once, the partition's transactional producer
    (Faust's naming), so the batch joins the transaction of the message that caused it."""
    producer = app.producer
    if not app.in_transaction:
        return producer._ensure_producer(), nullcontext()  # type: ignore[attr-defined]
    group = TopicPartitionGroup(source, partition, app.assignor.group_for_topic(source))
    tid = TransactionManager.transactional_id_format.format(tpg=group, group_id=app.conf.id)
    return (
        producer._transaction_producers[tid],  # type: ignore[attr-defined]
        producer._trn_locks[tid],  # type: ignore[attr-defined]
    )


async def restore_changelogs(
    broker_url: str, stores: Mapping[TopicPartition, MutableMapping[bytes, bytes]]
) -> None:
    """Read changelog partitions from their start to their end into their stores (committed
    records only, as exactly-once recovery must)."""
    async with committed_reader(broker_url) as consumer:
        consumer.assign(list(stores))
        await consumer.seek_to_beginning(*stores)
        ends = await consumer.end_offsets(list(stores))
        async for tp, records in read_until(consumer, ends, max_records=10_000):
            data = stores[tp]
            for record in records:
                if record.value is None:
                    data.pop(record.key, None)
                else:
                    data[record.key] = record.value


async def acknowledge_read(
    app: faust.App, topic: str, partition: int, first: int, covered: int, offsets: Iterable[int]
) -> None:
    """Tell Faust that ``first``..``covered`` of a partition were read outside its stream
    (``offsets`` those that held a message), so its commits move past them."""
    await app.consumer._add_gap(TP(topic, partition), first, covered)  # type: ignore[attr-defined]
    for offset in offsets:  # Faust needs only the topic, partition and offset to ack
        app.consumer.ack(
            Message(
                topic,
                partition,
                offset,
                timestamp=0.0,
                timestamp_type=0,
                headers=None,
                key=None,
                value=None,
                checksum=None,
            )
        )


def committed_offset(app: faust.App, topic: str, partition: int) -> int | None:
    """The input offset Faust last committed for a partition (its transaction committed with
    it, under exactly-once): the next offset to read, or ``None`` before the first commit."""
    return app.consumer._committed_offset.get(TP(topic, partition))  # type: ignore[attr-defined]
