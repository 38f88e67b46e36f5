"""The Faust pipeline: envelopes → validation → per-user attribution → window aggregates → SQL.

State lives in two keyed stores with compacted changelogs, both written from the partition
being processed: ``users`` (key user_id: the attribution state; in memory or in RocksDB,
pipelines/user_store.py) and ``aggregates`` (a dict, key window/counter + partition: absolute
sums). Neither is a Faust table: the pipeline restores both itself, which Faust's table
recovery would repeat (and, after a crash under exactly-once, wait 10 s for). Each unit of work
(one message, or under exactly-once up to 256 messages and 32 MiB) writes one record per
touched key, as record batches straight to the partition's (transactional, under
exactly-once) producer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faust
from aiokafka import TopicPartition
from sqlalchemy import Engine

from config.settings import Settings
from pipelines.attribution import Aggregates, AttributionConfig
from pipelines.changelog import committed_offset, restore_changelogs, send_records
from pipelines.events import ENCODE_EVENTS, CatalogIndex, Event, EventBounds, decode_message
from pipelines.faust_app import make_app
from pipelines.flush import Flusher
from pipelines.skipped import SkippedReader
from pipelines.state_keys import (
    decode_counter_value,
    encode_offset_key,
    partition_of_key,
    statistics_prefixes,
)
from pipelines.topics import Topics
from pipelines.unit_of_work import (
    aggregate_writes,
    attribute_users,
    dead_letter_record,
    missing_totals,
    split_strays,
    units_of_work,
)
from pipelines.user_state import expire_experiments
from pipelines.user_store import MemoryUsers, RocksUsers, UserStates, Write
from sinks.outage import Outage
from sinks.sql.store import flush_partition_state, load_effective_catalog

log = logging.getLogger(__name__)
BATCH_MESSAGES = 256  # messages taken together under exactly-once
BATCH_WAIT_SECONDS = 0.02
EXPIRY_CHECK_SECONDS = 60.0  # how often stopped experiments' TTLs are checked
EXPIRY_SLICE = 5_000  # user states expired under one hold of the partition


@dataclass
class Pipeline:
    settings: Settings
    engine: Engine
    app: faust.App
    topics: Topics
    users: UserStates
    users_changelog: Any  # faust Topic, compacted
    aggregates: dict[bytes, bytes]
    aggregates_changelog: Any  # faust Topic, compacted
    events_topic: Any
    dead_letter_topic: Any
    skipped: SkippedReader
    config: AttributionConfig | None = None
    index: CatalogIndex = field(default_factory=CatalogIndex)
    flusher: Flusher = field(default_factory=Flusher)
    verified: set[int] = field(default_factory=set)  # partitions whose state is checked
    totals_checked: set[int] = field(default_factory=set)  # and whose totals are all there
    broker_url: str = ""
    last_record_alone: bool = False  # Tansu's end offsets (changelog.send_records)
    serial: asyncio.Lock = field(default_factory=asyncio.Lock)  # agent and tail reads alike
    units: int = 0  # units of work handled, so far
    catalog_outage: Outage = field(default_factory=lambda: Outage("catalog reload", 1.0))
    stopped: dict[str, float] = field(default_factory=dict)  # experiment → stopped_at (epoch)
    expired: dict[int, set[str]] = field(default_factory=dict)  # partition → experiments swept

    def reload_catalog(self) -> None:
        catalog = load_effective_catalog(self.engine)
        self.index = CatalogIndex.of(catalog, EventBounds.of(self.settings))
        self.config = AttributionConfig.of(
            catalog, self.settings.window_seconds, self.settings.cuped_lookback_days * 86400
        )
        self.stopped = {
            e.key: e.stopped_at.timestamp()
            for e in catalog.experiments
            if e.status == "stopped" and e.stopped_at is not None
        }

    # --- processing --------------------------------------------------------------------

    async def ensure_state(self, partition: int) -> None:
        """Re-read a newly assigned partition's changelogs before its first message: Faust skips
        table recovery when a rebalance lands on a newer generation mid-recovery ("rebalance
        again"), and the partition would then restart from empty state."""
        if partition in self.verified:
            return
        # Every assigned partition at once: one consumer, one metadata wait, not one each.
        partitions = (self.assigned_partitions() | {partition}) - self.verified
        await self.users_changelog.maybe_declare()
        await self.aggregates_changelog.maybe_declare()
        topic = self.aggregates_changelog.get_topic_name()
        await restore_changelogs(
            self.broker_url, {TopicPartition(topic, p): self.aggregates for p in partitions}
        )
        await self.users.restore(self.broker_url, self.users_changelog.get_topic_name(), partitions)
        self.flusher.full = True  # restored rows are flushed too, not only touched ones
        self.verified |= partitions

    def forget(self, partitions: set[int]) -> None:
        """Drop revoked partitions' keys from memory: they may hold writes of a transaction
        Faust aborts on rebalance, which no committed changelog has (re-read on reassignment)."""
        self.verified -= partitions
        self.totals_checked -= partitions
        self.skipped.forget(partitions)
        for key in [k for k in self.aggregates if partition_of_key(k) in partitions]:
            del self.aggregates[key]
        self.users.forget(partitions)
        for partition in partitions:
            self.expired.pop(partition, None)

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
            if partition not in self.totals_checked:
                applied = self.applied(partition)
                if applied is not None:
                    backfill = missing_totals(self.aggregates, partition, applied)
                    await self.write_aggregates(partition, backfill, wait=True)
                self.totals_checked.add(partition)
            complete = await self.skipped.with_skipped(
                partition, self.applied(partition), messages, through
            )
            for unit in units_of_work(complete):
                await self.handle(partition, unit)

    def applied(self, partition: int) -> int | None:
        """The highest offset of ``partition`` whose effects are in the state."""
        value = self.aggregates.get(encode_offset_key(self.topics.events, partition))
        return None if value is None else int(decode_counter_value(value)[0])

    async def read_tails(self) -> None:
        """Messages Faust holds as read but never delivered, with nothing after them to show
        the hole (see :class:`pipelines.skipped.SkippedReader`)."""
        partitions = self.assigned_partitions() & self.verified
        for partition, through in self.skipped.tails_due(self.units, partitions, self.applied):
            await self.handle_partition(partition, [], through=through)

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
                await self.dead_letter_topic.send(
                    key=rejection.reason.encode(),
                    value=dead_letter_record(
                        rejection, self.topics.events, partition, message_offset
                    ),
                )
            for event in decoded.events:
                by_user[event.user_id].append(event)
        for home, events in split_strays(by_user, partition, self.settings.partitions).items():
            await self.events_topic.send(value=ENCODE_EVENTS(events), partition=home)

        user_writes = attribute_users(
            self.users.view(partition), by_user, config, aggregates, offset
        )
        # Without transactions, aggregates are durable before user states (a crash in between
        # replays the users, and the offset in each aggregate key keeps the replayed deltas
        # from counting twice), and both before Faust may commit the message's offset.
        # A transaction makes all of it durable together, so nothing waits.
        unfenced = not self.app.in_transaction
        writes = aggregate_writes(
            self.aggregates,
            aggregates,
            self.topics.events,
            partition,
            offset,
            self.applied(partition),
        )
        await self.write_aggregates(partition, writes, wait=unfenced)
        await self.write_users(partition, user_writes, offset, wait=unfenced)

    async def write_aggregates(
        self, partition: int, items: list[tuple[bytes, bytes]], wait: bool = False
    ) -> None:
        """Set aggregate keys and send their changelog records in one go, from the current
        partition; with ``wait``, return only once the broker has acknowledged every record."""
        if not items:
            return
        self.aggregates.update(items)
        acks = await self.send(self.aggregates_changelog.get_topic_name(), partition, items)
        if wait:
            await asyncio.gather(*acks)
        self.flusher.dirty.update(key for key, _ in items)

    async def write_users(
        self, partition: int, items: Sequence[Write], unit: int, wait: bool = False
    ) -> None:
        """User states (``None``: deleted) of the unit whose last input offset is ``unit``."""
        if not items:
            return
        acks = await self.send(self.users_changelog.get_topic_name(), partition, items)
        self.users.put(partition, items, unit, acks)
        if wait:
            await asyncio.gather(*acks)

    async def send(self, topic: str, partition: int, items: Sequence[Write]) -> list[Any]:
        return await send_records(
            self.app, self.topics.events, topic, partition, items, self.last_record_alone
        )

    def sync_users(self) -> None:
        """Committed units' user states to the store's disk (RocksDB; nothing in memory)."""
        for partition in self.verified:
            self.users.sync(partition, committed_offset(self.app, self.topics.events, partition))

    async def expire_states(self, now: float) -> int:
        """Remove from users' states the experiments stopped more than the TTL ago (a user
        left with none is deleted, a tombstone on the changelog), once per partition and
        experiment; returns how many states changed."""
        cutoff = now - self.settings.state_ttl_days * 86400
        due = {key for key, stopped_at in self.stopped.items() if stopped_at < cutoff}
        changed = 0
        for partition in sorted(self.assigned_partitions() & self.verified):
            todo = due - self.expired.get(partition, set())
            if not todo:
                continue
            keys = list(self.users.keys(partition))
            for start in range(0, len(keys), EXPIRY_SLICE):
                async with self.serial:  # the agent waits a slice, not the whole sweep
                    if partition not in self.verified:
                        break  # revoked meanwhile: the next owner sweeps it
                    view = self.users.view(partition)
                    writes: list[Write] = []
                    for key in keys[start : start + EXPIRY_SLICE]:
                        record = view.get(key)
                        if (
                            record is not None
                            and (new := expire_experiments(record, todo)) != record
                        ):
                            writes.append((key, new))
                    applied = self.applied(partition)
                    # In the transaction of the partition's next unit: synced once that commits.
                    unit = -1 if applied is None else applied + 1
                    await self.write_users(
                        partition, writes, unit, wait=not self.app.in_transaction
                    )
                    changed += len(writes)
            else:
                async with self.serial:
                    await self.expire_statistics(partition, todo)
                self.expired.setdefault(partition, set()).update(todo)
        return changed

    async def expire_statistics(self, partition: int, experiments: set[str]) -> None:
        """Drop the experiments' window and total keys from the worker's memory (tombstones on
        the changelog); their SQL rows stay as they are. Counters stay: one counted after
        this would start again from zero and overwrite its SQL row."""
        prefixes = statistics_prefixes(experiments)
        gone = [
            key
            for key in self.aggregates
            if key.startswith(prefixes) and partition_of_key(key) == partition
        ]
        if not gone:
            return
        for key in gone:
            del self.aggregates[key]
        await self.send(
            self.aggregates_changelog.get_topic_name(), partition, [(k, None) for k in gone]
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
        await self.flusher.flush(
            self.aggregates,
            self.assigned_partitions(),
            lambda rows: flush_partition_state(
                self.engine,
                rows.windows,
                rows.counters,
                rows.offsets,
                bool(self.settings.opensearch_url),
                rows.totals,
            ),
        )

    async def refresh_catalog(self) -> None:
        """Catalog edits reach attribution once per flush interval; while the database is
        away the last catalog stays in force."""
        if not self.catalog_outage.due():
            return
        try:
            await asyncio.to_thread(self.reload_catalog)
        except Exception as error:
            self.catalog_outage.failed(error)
            return
        self.catalog_outage.recovered()


def build_pipeline(
    settings: Settings,
    broker_url: str,
    engine: Engine,
    app_id: str | None = None,
    state_store: Literal["memory", "rocksdb"] = "memory",
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
    users_changelog, aggregates_changelog = (
        app.topic(
            f"{app.conf.id}-{name}-changelog",
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            compacting=True,
            internal=True,
        )
        for name in ("users", "aggregates")
    )
    users: UserStates = (
        RocksUsers(Path(settings.data_dir) / settings.namespace)
        if state_store == "rocksdb"
        else MemoryUsers()
    )
    pipeline = Pipeline(
        settings,
        engine,
        app,
        topics,
        users,
        users_changelog,
        {},
        aggregates_changelog,
        events_topic,
        dead_letter_topic,
        SkippedReader(app, broker_url, topics.events),
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
        pipeline.sync_users()
        await pipeline.flush()
        await pipeline.refresh_catalog()

    @app.timer(EXPIRY_CHECK_SECONDS)
    async def expiry_timer() -> None:
        await pipeline.expire_states(time.time())

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def after_rebalance(sender: Any, **_: Any) -> None:
        pipeline.flusher.full = True  # recovered keys were never flushed by this worker

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def before_revoke(sender: Any, revoked: Any, **_: Any) -> None:
        await pipeline.flush()
        pipeline.forget({tp.partition for tp in revoked if tp.topic == topics.events})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def before_shutdown(sender: Any, **_: Any) -> None:
        # Sent once the consumer has stopped and made its last commit.
        await pipeline.flush()
        pipeline.sync_users()
        pipeline.users.close()

    return pipeline
