"""The Faust pipeline: envelopes → validation → per-user attribution → window aggregates → SQL.

State lives in two plain Faust tables (with changelogs), both written from the partition
being processed: ``users`` (key user_id: the attribution state) and ``aggregates`` (key
window/counter + partition: absolute sums). Each unit of work (one message, or under
exactly-once up to 256 messages and 32 MiB) writes one record per touched key, as record
batches straight to the partition's (transactional, under exactly-once) producer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.consumer import TopicPartitionGroup, TransactionManager
from faust.types import TP, Message
from sqlalchemy import Engine

from config.settings import Settings
from pipelines.attribution import Aggregates, AttributionConfig, UserAttribution
from pipelines.events import ENCODE_EVENTS, CatalogIndex, Event, Rejection, decode_message
from pipelines.faust_app import make_app
from pipelines.producer import partitions_for, partitions_of_keys
from pipelines.skipped import first_offset, missing_ranges, read_range
from pipelines.user_state import decode_state, encode_state
from sinks.sql.store import flush_partition_state, load_catalog
from stats.sufficient import STATISTICS

log = logging.getLogger(__name__)
SEP = "\x1f"
STAT_COUNT = len(STATISTICS)
BATCH_MESSAGES = 256  # messages taken together under exactly-once
UNIT_BYTES = 32 * 1024 * 1024  # raw bytes per unit of work at most: envelopes reach 1 MiB
BATCH_WAIT_SECONDS = 0.02


@dataclass(frozen=True)
class Topics:
    events: str
    dead_letter: str
    alerts: str

    @classmethod
    def of(cls, namespace: str) -> Topics:
        return cls(
            f"{namespace}.events", f"{namespace}.dead-letter", f"{namespace}.guardrail-alerts"
        )

    def layout(self, partitions: int) -> dict[str, int]:
        """Partitions per topic, for :func:`pipelines.topics.ensure_topics`."""
        return {self.events: partitions, self.dead_letter: 1, self.alerts: 1}


def window_key(experiment: str, variant: str, metric: str, window: int, partition: int) -> bytes:
    return SEP.join(("w", experiment, variant, metric, str(window), str(partition))).encode()


def counter_key(name: str, key: str, partition: int) -> bytes:
    return SEP.join(("c", name, key, str(partition))).encode()


@dataclass
class Pipeline:
    settings: Settings
    engine: Engine
    app: faust.App
    topics: Topics
    users: Any  # faust Table[bytes, bytes]
    aggregates: Any
    events_topic: Any
    dead_letter_topic: Any
    config: AttributionConfig | None = None
    index: CatalogIndex = field(default_factory=CatalogIndex)
    dirty: set[bytes] = field(default_factory=set)
    full_flush: bool = True
    verified: set[int] = field(default_factory=set)  # partitions whose state is checked
    broker_url: str = ""
    last_record_alone: bool = False  # Tansu's end offsets (send_records)
    serial: asyncio.Lock = field(default_factory=asyncio.Lock)  # agent and tail reads alike
    units: int = 0  # units of work handled, so far
    quiet_looks: int = 0  # consecutive flush-time looks that saw no unit handled
    seen_units: int = 0  # ``units`` at the last look
    read_to: dict[int, int] = field(default_factory=dict)  # partition → offsets read directly

    # --- catalog -----------------------------------------------------------------------

    def reload_catalog(self) -> None:
        catalog = load_catalog(self.engine)
        self.index = CatalogIndex.of(catalog)
        self.config = AttributionConfig.of(
            catalog, self.settings.window_seconds, self.settings.cuped_lookback_days * 86400
        )

    # --- processing --------------------------------------------------------------------

    async def ensure_state(self, partition: int) -> None:
        """Re-read a newly assigned partition's changelogs before its first message: Faust skips
        table recovery when a rebalance lands on a newer generation mid-recovery ("rebalance
        again"), and the partition would then restart from empty state."""
        if partition in self.verified:
            return
        # Every assigned partition at once: one consumer, one metadata wait, not one each.
        partitions = (self.assigned_partitions() | {partition}) - self.verified
        await restore_changelogs(self.broker_url, (self.aggregates, self.users), partitions)
        self.full_flush = True  # restored rows are flushed too, not only touched ones
        self.verified |= partitions

    def forget(self, partitions: set[int]) -> None:
        """Drop revoked partitions' keys from memory: they may hold writes of a transaction
        Faust aborts on rebalance, which no committed changelog has (re-read on reassignment)."""
        self.verified -= partitions
        for partition in partitions:
            self.read_to.pop(partition, None)
        aggregates = store_dict(self.aggregates)
        for key in [k for k in aggregates if int(k.rsplit(SEP.encode(), 1)[1]) in partitions]:
            del aggregates[key]
        users = store_dict(self.users)
        keys = list(users)
        for key, home in zip(keys, partitions_of_keys(keys, self.settings.partitions), strict=True):
            if home in partitions:
                del users[key]

    async def handle_batch(self, messages: list[tuple[int, int, bytes]]) -> None:
        """(partition, offset, raw) messages taken together, in arrival order."""
        by_partition: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for partition, offset, raw in messages:
            by_partition[partition].append((offset, raw))
        for partition, batch in by_partition.items():
            await self.handle_partition(partition, batch)

    async def handle_partition(
        self, partition: int, messages: list[tuple[int, bytes]], through: int = -1
    ) -> None:
        """One partition's messages, with whatever Faust skipped before them (or up to
        ``through``), in units of work; serialised between the agent and the tail reads."""
        async with self.serial:
            await self.ensure_state(partition)
            for unit in units_of_work(await self.with_skipped(partition, messages, through)):
                await self.handle(partition, unit)

    def applied(self, partition: int) -> int | None:
        """The highest offset of ``partition`` whose effects are in the state."""
        value = store_dict(self.aggregates).get(
            counter_key("offset", self.topics.events, partition)
        )
        return None if value is None else int(orjson.loads(value)[0])

    async def with_skipped(
        self, partition: int, messages: list[tuple[int, bytes]], through: int = -1
    ) -> list[tuple[int, bytes]]:
        """``messages`` with whatever Faust skipped before them (or up to ``through``) read
        from the broker, in offset order; the read offsets are acknowledged to Faust, so its
        commits move past them."""
        topic = self.topics.events
        last = self.applied(partition)
        if last is None:  # nothing applied yet: the partition's first offset is due next
            last = await first_offset(self.broker_url, topic, partition) - 1
        offsets = [offset for offset, _ in messages]
        if through > max(offsets, default=last):
            offsets.append(through + 1)
        holes = missing_ranges(last, offsets)
        if not holes:
            return messages
        read = []
        for first, final in holes:
            found, covered = await read_range(self.broker_url, topic, partition, first, final)
            read.extend(found)
            if covered >= first:  # offsets with no message (transaction markers) included
                await self.app.consumer._add_gap(TP(topic, partition), first, covered)  # type: ignore[attr-defined]
                self.read_to[partition] = max(covered, self.read_to.get(partition, -1))
        # Holes of transaction markers alone (stray re-sends) hold no message: not a loss.
        log.log(
            logging.WARNING if read else logging.DEBUG,
            "%s[%d]: offsets %s never reached the agent; read %d messages directly",
            topic,
            partition,
            holes,
            len(read),
        )
        for offset, _ in read:  # Faust needs only the topic, partition and offset to ack
            self.app.consumer.ack(
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
        return sorted(messages + read, key=lambda message: message[0])

    async def read_tails(self) -> None:
        """Messages Faust holds as read but never delivered, with nothing after them to show
        the hole: once the agent has handled nothing for two looks, read every assigned
        partition whose applied offset is below its end up to that end."""
        if self.units != self.seen_units:
            self.seen_units, self.quiet_looks = self.units, 0
            return
        self.quiet_looks += 1
        if self.quiet_looks < 2:
            return
        consumer = self.app.consumer
        for partition in sorted(self.assigned_partitions() & self.verified):
            last = self.applied(partition)
            end = consumer.highwater(TP(self.topics.events, partition))
            if last is None or end is None or end - 1 <= max(last, self.read_to.get(partition, -1)):
                continue
            await self.handle_partition(partition, [], through=end - 1)

    async def handle(self, partition: int, messages: list[tuple[int, bytes]]) -> None:
        """Consecutive messages of one partition as one unit: each touched user's state is
        read and written once. Their fence is the last offset, which is exact for a single
        message, and for several only inside a transaction (see build_pipeline)."""
        config = self.config
        assert config is not None
        self.units += 1
        offset = messages[-1][0]
        aggregates = Aggregates()
        counters = aggregates.counters
        by_user: dict[str, list[Event]] = defaultdict(list)
        for message_offset, raw in messages:
            decoded = decode_message(raw, self.index)
            for rejection in decoded.rejections:
                counters[("dead_lettered", rejection.reason)] += 1
                await self.dead_letter(rejection, partition, message_offset)
            for event in decoded.events:
                by_user[event.user_id].append(event)
        strays: dict[int, list[Event]] = defaultdict(list)
        users = list(by_user)
        for user_id, home in zip(
            users, partitions_for(users, self.settings.partitions), strict=True
        ):
            if home != partition:
                strays[home].extend(by_user.pop(user_id))
        for home, events in strays.items():
            await self.events_topic.send(value=ENCODE_EVENTS(events), partition=home)

        attribution = UserAttribution(config, aggregates)
        user_writes = []
        data = store_dict(self.users)
        duplicates = applied = 0
        for user_id, events in by_user.items():
            key = user_id.encode()
            previous = data.get(key)
            state = decode_state(previous) if previous is not None else None
            if state is not None and state.offset >= offset:
                continue  # redelivered after a crash: this user already has this message
            state, user_duplicates = attribution.apply(state, events)
            state.offset = offset
            duplicates += user_duplicates
            applied += len(events) - user_duplicates
            user_writes.append((key, encode_state(state)))
        counters[("duplicates", "")] += duplicates
        counters[("applied", "")] += applied
        # Without transactions, aggregates are durable before user states (a crash in between
        # replays the users, and the offset in each aggregate key keeps the replayed deltas
        # from counting twice), and both before Faust may commit the message's offset.
        # A transaction makes all of it durable together, so nothing waits.
        unfenced = not self.app.in_transaction
        await self.write(
            self.aggregates,
            partition,
            self._aggregate_writes(aggregates, partition, offset),
            wait=unfenced,
        )
        await self.write(self.users, partition, user_writes, wait=unfenced)

    def _aggregate_writes(
        self, aggregates: Aggregates, partition: int, offset: int
    ) -> list[tuple[bytes, bytes]]:
        data = store_dict(self.aggregates)
        writes = []
        for (experiment, variant, metric, window), delta in aggregates.windows.items():
            key = window_key(experiment, variant, metric, window, partition)
            previous = orjson.loads(data[key]) if key in data else None
            if previous is not None and previous[STAT_COUNT] >= offset:
                continue  # this message's delta is in already
            row = previous[:STAT_COUNT] if previous else [0.0] * STAT_COUNT
            writes.append(
                (key, orjson.dumps([a + b for a, b in zip(row, delta, strict=True)] + [offset]))
            )
        for (name, key_part), increment in aggregates.counters.items():
            if not increment:
                continue
            key = counter_key(name, key_part, partition)
            previous = orjson.loads(data[key]) if key in data else None
            if previous is not None and previous[1] >= offset:
                continue
            value = (previous[0] if previous else 0.0) + increment
            writes.append((key, orjson.dumps([value, offset])))
        # The highest offset applied: a redelivered older message must not lower it.
        applied = max(offset, self.applied(partition) or 0)
        writes.append(
            (counter_key("offset", self.topics.events, partition), orjson.dumps([applied, applied]))
        )
        return writes

    async def write(
        self, table: Any, partition: int, items: list[tuple[bytes, bytes]], wait: bool = False
    ) -> None:
        """Set keys and send their changelog records in one go, from the current partition;
        with ``wait``, return only once the broker has acknowledged every record."""
        if not items:
            return
        data = store_dict(table)
        for key, value in items:
            data[key] = value
        acks = await self.send_records(table.changelog_topic.get_topic_name(), partition, items)
        if wait:
            await asyncio.gather(*acks)
        if table is self.aggregates:
            self.dirty.update(key for key, _ in items)

    async def send_records(
        self, topic: str, partition: int, items: list[tuple[bytes, bytes]]
    ) -> list[Any]:
        """Changelog records as whole record batches: one append each instead of one
        ``send`` coroutine per record, which costs more than the rest of the work."""
        producer, transaction_lock = self.kafka_producer(topic, partition)
        # Tansu reports a partition's end as its newest batch's base offset + 1 (NOTES.md):
        # the last record alone in its batch keeps that end right after every write.
        groups = [items[:-1], items[-1:]] if self.last_record_alone else [items]
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

    def kafka_producer(
        self, topic: str, partition: int
    ) -> tuple[AIOKafkaProducer, AbstractAsyncContextManager[Any]]:
        """The aiokafka producer Faust would send this record with, and the lock Faust holds
        while it commits: under exactly-once, the partition's transactional producer (Faust's
        naming), so the batch joins the transaction of the message that caused it."""
        producer = self.app.producer
        if not self.app.in_transaction:
            return producer._ensure_producer(), nullcontext()  # type: ignore[attr-defined]
        group = TopicPartitionGroup(topic, partition, self.app.assignor.group_for_topic(topic))
        tid = TransactionManager.transactional_id_format.format(
            tpg=group, group_id=self.app.conf.id
        )
        return (
            producer._transaction_producers[tid],  # type: ignore[attr-defined]
            producer._trn_locks[tid],  # type: ignore[attr-defined]
        )

    async def dead_letter(self, rejection: Rejection, partition: int, offset: int) -> None:
        try:
            raw_text: str = rejection.raw.decode()
            encoding = "utf-8"
        except UnicodeDecodeError:
            raw_text, encoding = base64.b64encode(rejection.raw).decode(), "base64"
        payload = {
            "reason": rejection.reason,
            "detail": rejection.detail,
            "topic": self.topics.events,
            "partition": partition,
            "offset": offset,
            "raw": raw_text,
            "raw_encoding": encoding,
            "at": time.time(),
        }
        await self.dead_letter_topic.send(
            key=rejection.reason.encode(), value=orjson.dumps(payload)
        )

    # --- flushing ----------------------------------------------------------------------

    def assigned_partitions(self) -> set[int]:
        return {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.events
        }

    async def flush(self) -> None:
        """Upsert absolute rows of the partitions this worker owns into SQL."""
        data = store_dict(self.aggregates)
        if self.full_flush:
            keys, self.full_flush = set(data.keys()), False
        else:
            keys = self.dirty
        self.dirty = set()
        owned = self.assigned_partitions()
        windows, counters, offsets = [], [], []
        for key in keys:
            value = data.get(key)
            if value is None:
                continue
            parts = key.decode().split(SEP)
            partition = int(parts[-1])
            if partition not in owned:
                continue
            numbers = orjson.loads(value)
            if parts[0] == "w":
                row = dict(zip(STATISTICS, numbers[:STAT_COUNT], strict=True))
                windows.append(
                    {
                        "experiment": parts[1],
                        "variant": parts[2],
                        "metric": parts[3],
                        "window_start": int(parts[4]),
                        "partition": partition,
                        "source_offset": int(numbers[STAT_COUNT]),
                        **row,
                    }
                )
            elif parts[1] == "offset":
                offsets.append(
                    {"topic": parts[2], "partition": partition, "offset": int(numbers[0])}
                )
            else:
                counters.append(
                    {
                        "name": parts[1],
                        "key": parts[2],
                        "partition": partition,
                        "value": numbers[0],
                        "source_offset": int(numbers[1]),
                    }
                )
        if windows or counters or offsets:
            await asyncio.to_thread(
                flush_partition_state,
                self.engine,
                windows,
                counters,
                offsets,
                bool(self.settings.opensearch_url),
            )
        await asyncio.to_thread(self.reload_catalog)


async def restore_changelogs(broker_url: str, tables: Sequence[Any], partitions: set[int]) -> None:
    """Read partitions of each table's changelog from their start to their end into its store
    (committed records only, as exactly-once recovery must)."""
    tps = {
        TopicPartition(t.changelog_topic.get_topic_name(), p): t for t in tables for p in partitions
    }
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_url, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign(list(tps))
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(list(tps))
        pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=10_000)
            for tp, messages in batches.items():
                data = store_dict(tps[tp])
                for message in messages:
                    if message.value is None:
                        data.pop(message.key, None)
                    else:
                        data[message.key] = message.value
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()


def units_of_work(
    messages: list[tuple[int, bytes]], limit: int = UNIT_BYTES
) -> list[list[tuple[int, bytes]]]:
    """Consecutive runs of (offset, raw) messages of at most ``limit`` raw bytes (one message at
    least), which bounds the events a unit holds decoded in memory."""
    units: list[list[tuple[int, bytes]]] = []
    size = 0
    for message in messages:
        if not units or size + len(message[1]) > limit:
            units.append([])
            size = 0
        units[-1].append(message)
        size += len(message[1])
    return units


def store_dict(table: Any) -> dict[bytes, bytes]:
    """A memory-store table's own dict: the store's mapping methods are Python-level layers
    that cost more than the lookups themselves."""
    return table.data.data


def build_pipeline(
    settings: Settings,
    broker_url: str,
    engine: Engine,
    app_id: str | None = None,
) -> Pipeline:
    """A Faust app with the pipeline's topics, tables, agent, flush timer and signals."""
    topics = Topics.of(settings.namespace)
    tansu = settings.kafka_flavor == "tansu"
    app = make_app(
        app_id or settings.namespace,
        broker_url,
        settings.partitions,
        exactly_once=settings.exactly_once and not tansu,
    )
    events_topic = app.topic(
        topics.events, value_serializer="raw", key_serializer="raw", partitions=settings.partitions
    )
    dead_letter_topic = app.topic(
        topics.dead_letter, value_serializer="raw", key_serializer="raw", partitions=1
    )
    users = app.Table("users", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    aggregates = app.Table(
        "aggregates", key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    pipeline = Pipeline(
        settings,
        engine,
        app,
        topics,
        users,
        aggregates,
        events_topic,
        dead_letter_topic,
        broker_url=broker_url,
        last_record_alone=tansu,
    )
    pipeline.reload_catalog()

    @app.agent(events_topic, name="attribute")
    async def attribute(stream: Any) -> None:
        if not app.in_transaction:
            # Offset fences need one message per unit: a replay may start mid-batch.
            async for event in stream.events():
                message = event.message
                await pipeline.handle_batch([(message.partition, message.offset, event.value)])
            return
        # A transaction commits a batch whole, so per-message costs (a record per touched
        # user, two record batches, Faust's lock) are paid once per batch.
        async for events in stream.take_events(BATCH_MESSAGES, within=BATCH_WAIT_SECONDS):
            await pipeline.handle_batch(
                [(e.message.partition, e.message.offset, e.value) for e in events]
            )

    @app.timer(settings.flush_seconds)
    async def flush_timer() -> None:
        await pipeline.read_tails()
        await pipeline.flush()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def after_rebalance(sender: Any, **_: Any) -> None:
        pipeline.full_flush = True  # recovered keys were never flushed by this worker

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def before_revoke(sender: Any, revoked: Any, **_: Any) -> None:
        await pipeline.flush()
        pipeline.forget({tp.partition for tp in revoked if tp.topic == topics.events})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def before_shutdown(sender: Any, **_: Any) -> None:
        await pipeline.flush()

    return pipeline
