"""A unit of work's pieces that need no broker: how messages are cut into units, the users'
attribution, the ``aggregates`` writes its deltas make, and the dead-letter record of a
rejected event."""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from collections.abc import Mapping

import orjson

from pipelines.attribution import Aggregates, AttributionConfig, UserAttribution
from pipelines.events import Event, Rejection
from pipelines.producer import partitions_for
from pipelines.state_keys import (
    TotalKey,
    WindowKey,
    decode_counter_value,
    decode_key,
    decode_window_value,
    encode_counter_key,
    encode_counter_value,
    encode_offset_key,
    encode_total_key,
    encode_window_key,
    encode_window_value,
    partition_of_key,
)
from pipelines.user_state import decode_state, encode_state

UNIT_BYTES = 32 * 1024 * 1024  # raw bytes per unit of work at most: envelopes reach 1 MiB


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


def split_strays(
    by_user: dict[str, list[Event]], partition: int, partitions: int
) -> dict[int, list[Event]]:
    """Removes from ``by_user`` the users whose home is another partition, and returns their
    events by home partition (they are re-sent there, so each user's state stays local)."""
    strays: dict[int, list[Event]] = defaultdict(list)
    users = list(by_user)
    for user_id, home in zip(users, partitions_for(users, partitions), strict=True):
        if home != partition:
            strays[home].extend(by_user.pop(user_id))
    return strays


def attribute_users(
    data: Mapping[bytes, bytes],
    by_user: Mapping[str, list[Event]],
    config: AttributionConfig,
    aggregates: Aggregates,
    offset: int,
) -> list[tuple[bytes, bytes]]:
    """Each user's events applied to its state in ``data`` (the ``users`` table), deltas and
    counters booked into ``aggregates``; returns the new states to write, fenced by ``offset``."""
    attribution = UserAttribution(config, aggregates)
    user_writes = []
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
    aggregates.counters[("duplicates", "")] += duplicates
    aggregates.counters[("applied", "")] += applied
    return user_writes


def aggregate_writes(
    data: Mapping[bytes, bytes],
    aggregates: Aggregates,
    topic: str,
    partition: int,
    offset: int,
    applied: int | None,
) -> list[tuple[bytes, bytes]]:
    """The ``aggregates`` table records of a unit fenced by ``offset``: each touched window and
    counter as its absolute value (skipped where the stored offset shows the delta is in), and
    the partition's highest applied offset (a redelivered older message never lowers it)."""
    writes = []
    totals: dict[tuple[str, str, str], list[float]] = {}
    for (experiment, variant, metric, window), delta in aggregates.windows.items():
        key = encode_window_key(experiment, variant, metric, window, partition)
        summed = totals.get((experiment, variant, metric))
        if summed is None:
            totals[(experiment, variant, metric)] = list(delta)
        else:
            summed[:] = [a + b for a, b in zip(summed, delta, strict=True)]
        writes.extend(_added(data, key, delta, offset))
    for (experiment, variant, metric), delta in totals.items():
        key = encode_total_key(experiment, variant, metric, partition)
        writes.extend(_added(data, key, delta, offset))
    for (name, key_part), increment in aggregates.counters.items():
        if not increment:
            continue
        key = encode_counter_key(name, key_part, partition)
        previous = data.get(key)
        value = 0.0
        if previous is not None:
            value, source_offset = decode_counter_value(previous)
            if source_offset >= offset:
                continue
        writes.append((key, encode_counter_value(value + increment, offset)))
    highest = max(offset, applied or 0)
    writes.append((encode_offset_key(topic, partition), encode_counter_value(highest, highest)))
    return writes


def _added(
    data: Mapping[bytes, bytes], key: bytes, delta: list[float], offset: int
) -> list[tuple[bytes, bytes]]:
    """The window or total ``key`` with ``delta`` added, unless its stored offset shows the
    delta is in already."""
    previous = data.get(key)
    if previous is None:
        return [(key, encode_window_value(delta, offset))]
    row, source_offset = decode_window_value(previous)
    if source_offset >= offset:
        return []
    return [(key, encode_window_value([a + b for a, b in zip(row, delta, strict=True)], offset))]


def missing_totals(
    data: Mapping[bytes, bytes], partition: int, applied: int
) -> list[tuple[bytes, bytes]]:
    """Totals of ``partition`` summed from its window rows, for the (experiment, variant,
    metric) that have windows but no total: state written before totals were kept. Fenced by
    ``applied``, the offset every window already holds."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    present: set[tuple[str, str, str]] = set()
    for raw_key, value in data.items():
        if partition_of_key(raw_key) != partition:
            continue
        key = decode_key(raw_key)
        if isinstance(key, TotalKey):
            present.add(key[:3])
        elif isinstance(key, WindowKey):
            row, _ = decode_window_value(value)
            summed = sums.setdefault(key[:3], [0.0] * len(row))
            summed[:] = [a + b for a, b in zip(summed, row, strict=True)]
    return [
        (encode_total_key(*name, partition), encode_window_value(row, applied))
        for name, row in sums.items()
        if name not in present
    ]


def dead_letter_record(rejection: Rejection, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter message: the reason, where the event was, and its raw bytes (base64
    when they are not UTF-8)."""
    try:
        raw_text: str = rejection.raw.decode()
        encoding = "utf-8"
    except UnicodeDecodeError:
        raw_text, encoding = base64.b64encode(rejection.raw).decode(), "base64"
    return orjson.dumps(
        {
            "reason": rejection.reason,
            "detail": rejection.detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "raw": raw_text,
            "raw_encoding": encoding,
            "at": time.time(),
        }
    )
