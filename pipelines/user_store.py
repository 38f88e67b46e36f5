"""Where a worker keeps its users' attribution states (docs/design.md §20): one store per
partition, restored from the ``users`` changelog and written beside it. ``MemoryUsers`` (demo,
replay, tests) re-reads the whole changelog on every assignment; ``RocksUsers`` (``xpstream
run``) keeps the states on disk and reads only the changelog after its checkpoint."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka import ConsumerRecord, TopicPartition
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from pipelines.changelog import restore_changelogs
from sinks.kafka_reads import committed_reader, read_until

log = logging.getLogger(__name__)
Write = tuple[bytes, bytes | None]  # None deletes the key (a tombstone in the changelog)
# Not UTF-8, so no user id encodes to it: the changelog offset the store reflects.
CHECKPOINT = b"\xffchangelog-offset"
OPEN_ATTEMPTS = 60  # a revoked partition's store is closed by its previous owner first
BLOCK_CACHE_BYTES = 32 * 1024 * 1024


class UserStates(Protocol):
    def view(self, partition: int) -> Mapping[bytes, bytes]: ...

    def put(self, partition: int, items: Sequence[Write], unit: int, acks: list[Any]) -> None: ...

    async def restore(self, broker_url: str, topic: str, partitions: set[int]) -> None: ...

    def sync(self, partition: int, committed: int | None) -> None: ...

    def keys(self, partition: int) -> Iterator[bytes]: ...

    def forget(self, partitions: set[int]) -> None: ...

    def close(self) -> None: ...


@dataclass
class MemoryUsers:
    """A dict per partition; nothing survives the process, so nothing needs a checkpoint."""

    data: dict[int, dict[bytes, bytes]] = field(default_factory=dict)

    def view(self, partition: int) -> dict[bytes, bytes]:
        return self.data.setdefault(partition, {})

    def put(self, partition: int, items: Sequence[Write], unit: int, acks: list[Any]) -> None:
        data = self.view(partition)
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    async def restore(self, broker_url: str, topic: str, partitions: set[int]) -> None:
        for partition in partitions:
            self.data[partition] = {}
        await restore_changelogs(
            broker_url, {TopicPartition(topic, p): self.data[p] for p in partitions}
        )

    def sync(self, partition: int, committed: int | None) -> None:
        return None

    def keys(self, partition: int) -> Iterator[bytes]:
        return iter(list(self.view(partition)))

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.data.pop(partition, None)

    def close(self) -> None:
        self.data.clear()


@dataclass
class Chunk:
    """One unit of work's writes, held until the unit's input offset is committed."""

    unit: int  # the unit's last input offset
    number: int
    items: Sequence[Write]
    acks: list[Any]  # futures of the changelog batches' RecordMetadata


@dataclass
class RocksPartition:
    db: Rdict
    checkpoint: int  # every committed changelog record before it is in ``db``
    pending: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)
    chunks: deque[Chunk] = field(default_factory=deque)
    numbered: int = 0


class RocksView(Mapping[bytes, bytes]):
    """A partition's states as the pipeline reads them: its uncommitted writes over the disk."""

    def __init__(self, partition: RocksPartition) -> None:
        self.partition = partition

    def get(self, key: bytes, default: Any = None) -> Any:
        hit = self.partition.pending.get(key)
        value = self.partition.db.get(key) if hit is None else hit[0]
        return default if value is None else value

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(_keys(self.partition)))

    def __len__(self) -> int:
        return sum(1 for _ in _keys(self.partition))


def _keys(partition: RocksPartition) -> Iterator[bytes]:
    """The partition's keys: on disk unless deleted since, then those only written since."""
    pending = partition.pending
    for stored in partition.db.keys():  # noqa: SIM118 (an Rdict iterates its items)
        key = bytes(stored)  # type: ignore[arg-type]  # raw mode: keys are bytes
        entry = pending.get(key)
        if key != CHECKPOINT and (entry is None or entry[0] is not None):
            yield key
    for key, (value, _) in list(pending.items()):
        if value is not None and partition.db.get(key) is None:
            yield key


class RocksUsers:
    """States on disk (RocksDB through rocksdict, the library of Faust's own rocksdb store),
    one database per partition under ``directory``.

    Under exactly-once, a write belongs to a transaction that a crash may abort, and an
    aborted write must never reach the disk: a unit's writes wait in memory (read before the
    disk) until its input offset is committed, and go to disk in one atomic batch with the
    changelog offset they reach. A restart then reads the committed changelog from that
    checkpoint on, which holds exactly what the disk lacks (Kafka Streams keeps a checkpoint
    of changelog offsets the same way)."""

    def __init__(self, directory: Path, write_buffer_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = directory
        self.write_buffer_bytes = write_buffer_bytes
        self.partitions: dict[int, RocksPartition] = {}
        self.cache = Cache(BLOCK_CACHE_BYTES)  # shared by the partitions' databases
        # No write-ahead log: a crash loses the memtables, and the disk falls back to an earlier
        # batch, with the checkpoint written in it; the changelog after it is read again.
        self.write_options = WriteOptions()
        self.write_options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property

    def _options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Memtables are RocksDB's main memory: bounded per partition (the default is 64 MiB).
        options.set_write_buffer_size(self.write_buffer_bytes)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)  # a new user's miss skips the data blocks
        table.set_block_cache(self.cache)
        options.set_block_based_table_factory(table)
        return options

    def _path(self, partition: int) -> Path:
        return self.directory / f"users-{partition}"

    async def _open(self, partition: int) -> RocksPartition:
        self._path(partition).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                db = Rdict(str(self._path(partition)), self._options())
                break
            except Exception as error:  # rocksdict raises a bare Exception on a held lock
                if "lock" not in str(error).lower() or attempt == OPEN_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5)
        value = db.get(CHECKPOINT)
        return RocksPartition(db, -1 if value is None else int(value))

    def _wipe(self, partition: int) -> None:
        self.partitions.pop(partition).db.close()  # nothing in it is kept
        shutil.rmtree(self._path(partition), ignore_errors=True)

    def view(self, partition: int) -> RocksView:
        return RocksView(self.partitions[partition])

    def put(self, partition: int, items: Sequence[Write], unit: int, acks: list[Any]) -> None:
        part = self.partitions[partition]
        part.numbered += 1
        part.chunks.append(Chunk(unit, part.numbered, items, acks))
        for key, value in items:
            part.pending[key] = (value, part.numbered)

    async def restore(self, broker_url: str, topic: str, partitions: set[int]) -> None:
        """Open each partition's database and add the committed changelog after its
        checkpoint; a checkpoint the topic cannot continue (recreated, truncated) starts over."""
        started = time.perf_counter()
        for partition in partitions:
            if partition not in self.partitions:
                self.partitions[partition] = await self._open(partition)
        tps = {TopicPartition(topic, p): p for p in partitions}
        async with committed_reader(broker_url) as consumer:
            consumer.assign(list(tps))
            firsts = await consumer.beginning_offsets(list(tps))
            ends = await consumer.end_offsets(list(tps))
            for tp, partition in tps.items():
                checkpoint = self.partitions[partition].checkpoint
                if checkpoint >= 0 and not firsts[tp] <= checkpoint <= ends[tp]:
                    log.warning(
                        "users store %d: checkpoint %d outside the changelog [%d, %d]: rebuilt",
                        partition,
                        checkpoint,
                        firsts[tp],
                        ends[tp],
                    )
                    self._wipe(partition)
                    self.partitions[partition] = await self._open(partition)
                    checkpoint = -1
                consumer.seek(tp, max(checkpoint, firsts[tp]))
            read = 0
            async for tp, records in read_until(consumer, ends, max_records=10_000):
                self._apply(self.partitions[tps[tp]], records)
                read += len(records)
        log.info(
            "users stores %s: %d changelog records in %.2fs",
            sorted(partitions),
            read,
            time.perf_counter() - started,
        )

    def _apply(self, part: RocksPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        batch = WriteBatch(raw_mode=True)
        for record in records:
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        part.checkpoint = records[-1].offset
        batch.put(CHECKPOINT, str(part.checkpoint).encode())
        part.db.write(batch, self.write_options)

    def sync(self, partition: int, committed: int | None) -> None:
        """Move the writes of units below ``committed`` (the partition's committed input
        offset) to disk, with the changelog offset they reach, in one atomic batch."""
        part = self.partitions.get(partition)
        if part is None or committed is None:
            return
        batch = WriteBatch(raw_mode=True)
        last = 0
        checkpoint = part.checkpoint
        while part.chunks and part.chunks[0].unit < committed:
            chunk = part.chunks[0]
            if not all(ack.done() for ack in chunk.acks):
                break
            part.chunks.popleft()
            for key, value in chunk.items:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            for ack in chunk.acks:  # a batch's base offset: a lower bound of its records'
                if not ack.cancelled() and ack.exception() is None and ack.result() is not None:
                    checkpoint = max(checkpoint, ack.result().offset)
            last = chunk.number
        if not last:
            return
        batch.put(CHECKPOINT, str(checkpoint).encode())
        part.db.write(batch, self.write_options)
        part.checkpoint = checkpoint
        part.pending = {k: entry for k, entry in part.pending.items() if entry[1] > last}

    def keys(self, partition: int) -> Iterator[bytes]:
        return _keys(self.partitions[partition])

    def forget(self, partitions: set[int]) -> None:
        """Revoked partitions: their uncommitted writes go (their transaction may be aborted),
        their disk stays for a later assignment, closed so that another worker may open it."""
        for partition in partitions & set(self.partitions):
            db = self.partitions.pop(partition).db
            db.flush()  # without a write-ahead log, the memtables reach the disk only so
            db.close()

    def close(self) -> None:
        self.forget(set(self.partitions))
