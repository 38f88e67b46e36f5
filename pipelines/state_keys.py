"""Keys and values of the ``aggregates`` state table, as paired encode/decode functions.

Keys are UTF-8 fields joined by ``KEY_SEP`` (``\\x1f``, which catalog keys never hold); the
partition is always the last field, so it is read without parsing the rest:

- window row: ``w␟experiment␟variant␟metric␟window_start␟partition`` → JSON
  ``[n, sum, …, num_den_sum, source_offset]`` (the statistics in ``STATISTICS`` order)
- total:      ``t␟experiment␟variant␟metric␟partition`` → the same JSON: the partition's sum
  over every window, kept beside them so that a look reads one row, not every window
- counter:    ``c␟name␟key␟partition`` → JSON ``[value, source_offset]``
- applied offset of a source partition: the counter ``c␟offset␟topic␟partition`` → JSON
  ``[offset, offset]``

The ``users`` table is keyed by the user id itself (see :mod:`pipelines.user_state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import orjson

from config.catalog import KEY_SEP

WINDOW, TOTAL, COUNTER = "w", "t", "c"
OFFSET_COUNTER = "offset"  # the counter name of a partition's highest applied offset
_SEP = KEY_SEP.encode()


class WindowKey(NamedTuple):
    experiment: str
    variant: str
    metric: str
    window_start: int
    partition: int


class TotalKey(NamedTuple):
    experiment: str
    variant: str
    metric: str
    partition: int


class CounterKey(NamedTuple):
    name: str
    key: str
    partition: int


def statistics_prefixes(experiments: set[str]) -> tuple[bytes, ...]:
    """Every window and total key of these experiments starts with one of these."""
    return tuple(
        KEY_SEP.join((kind, experiment, "")).encode()
        for kind in (WINDOW, TOTAL)
        for experiment in sorted(experiments)
    )


def encode_window_key(
    experiment: str, variant: str, metric: str, window_start: int, partition: int
) -> bytes:
    return KEY_SEP.join(
        (WINDOW, experiment, variant, metric, str(window_start), str(partition))
    ).encode()


def encode_total_key(experiment: str, variant: str, metric: str, partition: int) -> bytes:
    return KEY_SEP.join((TOTAL, experiment, variant, metric, str(partition))).encode()


def encode_counter_key(name: str, key: str, partition: int) -> bytes:
    return KEY_SEP.join((COUNTER, name, key, str(partition))).encode()


def encode_offset_key(topic: str, partition: int) -> bytes:
    return encode_counter_key(OFFSET_COUNTER, topic, partition)


def decode_key(raw: bytes) -> WindowKey | TotalKey | CounterKey:
    kind, *fields = raw.decode().split(KEY_SEP)
    if kind == WINDOW:
        experiment, variant, metric, window_start, partition = fields
        return WindowKey(experiment, variant, metric, int(window_start), int(partition))
    if kind == TOTAL:
        experiment, variant, metric, partition = fields
        return TotalKey(experiment, variant, metric, int(partition))
    if kind == COUNTER:
        name, key, partition = fields
        return CounterKey(name, key, int(partition))
    raise ValueError(f"not a state key: {raw!r}")


def partition_of_key(raw: bytes) -> int:
    return int(raw.rsplit(_SEP, 1)[1])


def encode_window_value(statistics: Sequence[float], source_offset: int) -> bytes:
    return orjson.dumps([*statistics, source_offset])


def decode_window_value(raw: bytes) -> tuple[list[float], int]:
    """The statistics and the offset of the last message that changed them."""
    *statistics, source_offset = orjson.loads(raw)
    return statistics, int(source_offset)


def encode_counter_value(value: float, source_offset: int) -> bytes:
    return orjson.dumps([value, source_offset])


def decode_counter_value(raw: bytes) -> tuple[float, int]:
    value, source_offset = orjson.loads(raw)
    return value, int(source_offset)
