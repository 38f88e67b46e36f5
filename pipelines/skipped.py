"""Offsets the Faust stream skipped, and reading them straight from the broker.

Faust's consumer can mark fetched messages as read without handing them to the agent when a
recovery seek races its drain loop (its `_drain_messages` drops them once ``suspend_flow`` is
set, or as below the read offset); seen here after about one SIGKILL restart in ten. The
pipeline therefore checks that the offsets it applies to a partition are contiguous and reads
any hole itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from pipelines.changelog import acknowledge_read
from sinks.kafka_reads import committed_reader, read_until

log = logging.getLogger(__name__)


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


async def first_offset(broker_url: str, topic: str, partition: int) -> int:
    tp = TopicPartition(topic, partition)
    async with committed_reader(broker_url) as consumer:
        return int((await consumer.beginning_offsets([tp]))[tp])


async def read_range(
    broker_url: str, topic: str, partition: int, first: int, last: int
) -> tuple[list[tuple[int, bytes]], int]:
    """Committed messages with offsets first..last (transaction markers have none), and the
    highest offset the read covers: none past the last stable offset, whose records may
    still be committed and delivered."""
    tp = TopicPartition(topic, partition)
    messages: list[tuple[int, bytes]] = []
    async with committed_reader(broker_url) as consumer:
        end = min(last + 1, (await consumer.end_offsets([tp]))[tp])
        consumer.assign([tp])
        consumer.seek(tp, first)
        async for _, records in read_until(consumer, {tp: end}):
            messages.extend(
                (m.offset, m.value)
                for m in records
                if first <= m.offset < end and m.value is not None
            )
    return messages, end - 1


@dataclass
class SkippedReader:
    """Reads the offsets of the events topic that the Faust stream skipped: holes before the
    messages it delivers, and (once the agent has been idle for two looks) a partition's tail
    up to its high-water mark, which no later message would reveal."""

    app: Any  # faust.App
    broker_url: str
    topic: str
    read_to: dict[int, int] = field(default_factory=dict)  # partition → offsets read directly
    quiet_looks: int = 0  # consecutive looks that saw no unit handled
    seen_units: int = 0  # units of work handled as of the last look

    async def with_skipped(
        self,
        partition: int,
        applied: int | None,
        messages: list[tuple[int, bytes]],
        through: int = -1,
    ) -> list[tuple[int, bytes]]:
        """``messages`` with whatever Faust skipped after ``applied`` (the highest applied
        offset) before them, or up to ``through``, read from the broker, in offset order; the
        read offsets are acknowledged to Faust, so its commits move past them."""
        if applied is None:  # nothing applied yet: the partition's first offset is due next
            applied = await first_offset(self.broker_url, self.topic, partition) - 1
        offsets = [offset for offset, _ in messages]
        if through > max(offsets, default=applied):
            offsets.append(through + 1)
        holes = missing_ranges(applied, offsets)
        if not holes:
            return messages
        read = []
        for first, final in holes:
            found, covered = await read_range(self.broker_url, self.topic, partition, first, final)
            read.extend(found)
            if covered >= first:  # offsets with no message (transaction markers) included
                await acknowledge_read(
                    self.app, self.topic, partition, first, covered, (o for o, _ in found)
                )
                self.read_to[partition] = max(covered, self.read_to.get(partition, -1))
        # Holes of transaction markers alone (stray re-sends) hold no message: not a loss.
        log.log(
            logging.WARNING if read else logging.DEBUG,
            "%s[%d]: offsets %s never reached the agent; read %d messages directly",
            self.topic,
            partition,
            holes,
            len(read),
        )
        return sorted(messages + read, key=lambda message: message[0])

    def tails_due(
        self, units: int, partitions: Iterable[int], applied: Callable[[int], int | None]
    ) -> list[tuple[int, int]]:
        """(partition, last offset) of each partition whose applied offset is below its end,
        once the agent has handled no unit (``units`` so far) for two looks: a backlog is never
        read around."""
        if units != self.seen_units:
            self.seen_units, self.quiet_looks = units, 0
            return []
        self.quiet_looks += 1
        if self.quiet_looks < 2:
            return []
        due = []
        for partition in sorted(partitions):
            last = applied(partition)
            end = self.app.consumer.highwater(TP(self.topic, partition))
            if last is None or end is None or end - 1 <= max(last, self.read_to.get(partition, -1)):
                continue
            due.append((partition, end - 1))
        return due

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.read_to.pop(partition, None)
