"""The flush: state keys of the partitions a worker owns → absolute SQL rows → one upsert, and
the backoff that keeps a worker alive while the database is away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.state_keys import (
    OFFSET_COUNTER,
    CounterKey,
    TotalKey,
    decode_counter_value,
    decode_key,
    decode_window_value,
)
from stats.sufficient import STATISTICS

log = logging.getLogger(__name__)


@dataclass
class Outage:
    """Backoff for a step whose dependency is away: tries wait ``base`` seconds, doubling up to
    ``cap``; one warning when the outage starts and one when it ends, the rest at DEBUG."""

    what: str
    base: float
    cap: float = 30.0
    failures: int = 0
    retry_at: float = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, error: BaseException) -> None:
        delay = min(self.cap, self.base * 2**self.failures)
        level = logging.WARNING if self.failures == 0 else logging.DEBUG
        log.log(
            level,
            "%s failed (%s: %s); retrying in %.1fs",
            self.what,
            type(error).__name__,
            str(error)[:200],
            delay,
        )
        self.failures += 1
        self.retry_at = time.monotonic() + delay

    def recovered(self) -> None:
        if self.failures:
            log.warning("%s works again after %d failed tries", self.what, self.failures)
        self.failures, self.retry_at = 0, 0.0


@dataclass
class FlushRows:
    windows: list[dict[str, Any]] = field(default_factory=list)
    totals: list[dict[str, Any]] = field(default_factory=list)
    counters: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.windows or self.totals or self.counters or self.offsets)


def rows_of(keys: Iterable[bytes], data: Mapping[bytes, bytes], owned: set[int]) -> FlushRows:
    """The SQL rows of ``keys`` as ``data`` holds them now, for the ``owned`` partitions only
    (a revoked partition's keys are its new owner's to flush)."""
    rows = FlushRows()
    for raw_key in keys:
        value = data.get(raw_key)
        if value is None:
            continue
        key = decode_key(raw_key)
        if key.partition not in owned:
            continue
        if isinstance(key, CounterKey):
            number, source_offset = decode_counter_value(value)
            if key.name == OFFSET_COUNTER:
                rows.offsets.append(
                    {"topic": key.key, "partition": key.partition, "offset": int(number)}
                )
            else:
                rows.counters.append(
                    {
                        "name": key.name,
                        "key": key.key,
                        "partition": key.partition,
                        "value": number,
                        "source_offset": source_offset,
                    }
                )
            continue
        statistics, source_offset = decode_window_value(value)
        row = {
            "experiment": key.experiment,
            "variant": key.variant,
            "metric": key.metric,
            "partition": key.partition,
            "source_offset": source_offset,
            **dict(zip(STATISTICS, statistics, strict=True)),
        }
        if isinstance(key, TotalKey):
            rows.totals.append(row)
        else:
            rows.windows.append(row | {"window_start": key.window_start})
    return rows


@dataclass
class Flusher:
    """Which keys the next flush writes (``dirty`` ones, or all after ``full`` is set) and the
    write itself. A failed write loses nothing: its keys stay dirty and the next flush, after
    a backoff, retries them (the state and Kafka keep the data; SQL receives absolute values)."""

    dirty: set[bytes] = field(default_factory=set)
    full: bool = True
    outage: Outage = field(default_factory=lambda: Outage("flush to SQL", 1.0))

    async def flush(
        self, data: Mapping[bytes, bytes], owned: set[int], write: Callable[[FlushRows], None]
    ) -> None:
        """``write`` runs in a thread: it is the SQL transaction."""
        if not self.outage.due():
            return
        if self.full:
            keys, self.full = set(data.keys()), False
        else:
            keys = self.dirty
        self.dirty = set()
        rows = rows_of(keys, data, owned)
        try:
            if rows:
                await asyncio.to_thread(write, rows)
        except Exception as error:  # whatever the database says, the worker lives on
            self.dirty |= keys
            self.outage.failed(error)
            return
        self.outage.recovered()
