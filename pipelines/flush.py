"""The flush: state keys of the partitions a worker owns → absolute SQL rows → one upsert, with
the backoff that keeps a worker alive while the database is away."""

from __future__ import annotations

import asyncio
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
from sinks.outage import Outage
from stats.sufficient import STATISTICS


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
    write itself. A failed write loses nothing: the next flush, after a backoff, writes every
    key (the state and Kafka keep the data; SQL receives absolute values)."""

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
            # The database may come back from a crash or a failover without its last commits:
            # the first flush after it writes every row again, not only the dirty ones.
            self.full = True
            self.outage.failed(error)
            return
        self.outage.recovered()
