"""The flush: state keys of the partitions a worker owns → absolute SQL rows → one upsert."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.state_keys import (
    OFFSET_COUNTER,
    CounterKey,
    decode_counter_value,
    decode_key,
    decode_window_value,
)
from stats.sufficient import STATISTICS


@dataclass
class FlushRows:
    windows: list[dict[str, Any]] = field(default_factory=list)
    counters: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.windows or self.counters or self.offsets)


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
        rows.windows.append(
            {
                "experiment": key.experiment,
                "variant": key.variant,
                "metric": key.metric,
                "window_start": key.window_start,
                "partition": key.partition,
                "source_offset": source_offset,
                **dict(zip(STATISTICS, statistics, strict=True)),
            }
        )
    return rows
