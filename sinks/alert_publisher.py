"""Publishes outbox alerts to Kafka exactly once: sent rows are marked after the broker's ack,
and on start (or after a failed send) the topic is read back so an alert that reached Kafka but
was never marked is marked instead of sent again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import Engine

from sinks.kafka_reads import read_until
from sinks.outage import Outage
from sinks.sql.alerts import mark_sent, sent_high_water, unsent
from sinks.sql.leases import Lease
from sinks.sql.store import unavailable

log = logging.getLogger(__name__)


class AlertPublisher:
    def __init__(self, engine: Engine, bootstrap: str, topic: str) -> None:
        self.engine, self.bootstrap, self.topic = engine, bootstrap, topic
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def start(self) -> None:
        await self.producer.start()
        await self.reconcile()

    async def stop(self) -> None:
        await self.producer.stop()

    async def reconcile(self) -> int:
        """Mark unsent outbox rows whose alert is already on the topic; returns how many."""
        pending = {row.alert_id for row in await asyncio.to_thread(unsent, self.engine)}
        if not pending:
            return 0
        start = await asyncio.to_thread(sent_high_water, self.engine)
        found: dict[str, tuple[int, int]] = {}
        # Subscribed without a group: aiokafka assigns every partition of the topic.
        consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = sorted(consumer.assignment())
            for partition, offset, alert in await _scan(consumer, partitions, start):
                if alert.get("alert_id") in pending:
                    found[alert["alert_id"]] = (partition, offset)
        finally:
            await consumer.stop()
        now = datetime.now(UTC)
        for alert_id, (partition, offset) in found.items():
            await asyncio.to_thread(mark_sent, self.engine, alert_id, partition, offset, now)
        if found:
            log.warning("%d alerts were on %s but not marked sent: marked", len(found), self.topic)
        return len(found)

    async def publish_pending(self) -> int:
        """Send every unsent alert in outbox order; each is marked only after the ack."""
        sent = 0
        for row in await asyncio.to_thread(unsent, self.engine):
            try:
                metadata = await self.producer.send_and_wait(
                    self.topic,
                    row.payload.encode(),
                    key=row.key.encode(),
                    headers=[("alert_id", row.alert_id.encode())],
                )
            except KafkaError:
                # The broker may have written it anyway: read back before any retry.
                log.warning("sending alert %s failed; will reconcile and retry", row.alert_id)
                await self.reconcile()
                raise
            await asyncio.to_thread(
                mark_sent,
                self.engine,
                row.alert_id,
                metadata.partition,
                metadata.offset,
                datetime.now(UTC),
            )
            sent += 1
        return sent

    async def run(
        self,
        stop: asyncio.Event,
        wake: asyncio.Event,
        poll_seconds: float,
        lease: Lease | None = None,
    ) -> None:
        """Publish whenever woken (a look wrote alerts) or every ``poll_seconds``; with
        ``lease``, only while this replica leads (renewed before each pass; an alert a
        deposed leader was sending is found on the topic by the next leader's reconcile)."""
        outage = Outage("alert publishing", 0.0)
        while not stop.is_set():
            try:
                if lease is not None and not await asyncio.to_thread(lease.acquire):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), poll_seconds / 2)
                    continue
                await self.publish_pending()
            except Exception as error:  # the broker or the database is away: the rows wait
                if not (isinstance(error, KafkaError) or unavailable(error)):
                    raise
                outage.failed(error)
                await asyncio.sleep(poll_seconds)
                continue
            outage.recovered()
            wake.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, wake)]
            await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if lease is not None and lease.leading:
            await asyncio.to_thread(lease.release)


async def _scan(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], start: dict[int, int]
) -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, alert) of every record after ``start`` up to the end offsets."""
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        if tp.partition in start:
            consumer.seek(tp, start[tp.partition] + 1)
        else:
            await consumer.seek_to_beginning(tp)
    return [
        (tp.partition, r.offset, orjson.loads(r.value or b"{}"))
        async for tp, records in read_until(consumer, ends, idle_fetches=3)
        for r in records
    ]


async def read_alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every alert on the topic, oldest first (what safety automation consumes)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.assignment())
        if not partitions:
            return []
        return [alert for _, _, alert in await _scan(consumer, partitions, {})]
    finally:
        await consumer.stop()
