"""Producing events as batch envelopes, one per partition of their users (docs/design.md §5)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from pipelines.events import MAX_ENVELOPE_BYTES, MAX_EVENT_BYTES

ENVELOPE_EVENTS = 500


def partition_for(user_id: str, partitions: int) -> int:
    """The partition Kafka's default (Java) partitioner gives the key ``user_id``."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


MURMUR_M = np.uint32(0x5BD1E995)


def murmur2_many(keys: Sequence[bytes]) -> npt.NDArray[np.uint32]:
    """Kafka's murmur2 (the Java client's, as aiokafka.partitioner.murmur2) of many keys at
    once, one numpy step per 4-byte block: the pure-Python one costs ~10 µs a key."""
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    blocks = (int(lengths.max()) + 3) // 4 if len(keys) else 0
    padded = np.zeros((len(keys), max(blocks, 1) * 4), dtype=np.uint8)
    padded[np.arange(padded.shape[1])[None, :] < lengths[:, None]] = np.frombuffer(
        b"".join(keys), dtype=np.uint8
    )
    words = padded.view("<u4")  # zero padding makes a short tail's word its XOR term
    full = lengths // 4
    h = np.uint32(0x9747B28C) ^ lengths.astype(np.uint32)
    for i in range(blocks):
        k = words[:, i] * MURMUR_M
        k ^= k >> np.uint32(24)
        k *= MURMUR_M
        h = np.where(i < full, (h * MURMUR_M) ^ k, h)
    tail = words[np.arange(len(keys)), np.minimum(full, words.shape[1] - 1)]
    h = np.where(lengths % 4 > 0, (h ^ tail) * MURMUR_M, h)
    h ^= h >> np.uint32(13)
    h *= MURMUR_M
    h ^= h >> np.uint32(15)
    return h


def partitions_for(user_ids: Sequence[str], partitions: int) -> list[int]:
    """:func:`partition_for` of many users."""
    return partitions_of_keys([user.encode() for user in user_ids], partitions)


def partitions_of_keys(keys: Sequence[bytes], partitions: int) -> list[int]:
    """The partitions Kafka's default partitioner gives these (already encoded) keys."""
    return ((murmur2_many(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()


def user_of(raw: bytes) -> str | None:
    """The user of one serialised event, if it is a JSON object with a string user_id."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    user = obj.get("user_id") if isinstance(obj, dict) else None
    return user if isinstance(user, str) and user else None


def envelopes(
    raw_events: Iterable[bytes], partitions: int, per_envelope: int = ENVELOPE_EVENTS
) -> Iterable[tuple[int | None, bytes]]:
    """(partition, message) pairs: events of one partition joined into JSON arrays, in order.

    What cannot be routed (not JSON, no user_id, oversize) goes alone, so the pipeline can
    dead-letter it with its own reason."""
    pending: dict[int, list[bytes]] = defaultdict(list)
    sizes: dict[int, int] = defaultdict(int)
    for raw in raw_events:
        user = user_of(raw) if len(raw) <= MAX_EVENT_BYTES else None
        if user is None:
            yield None, raw
            continue
        partition = partition_for(user, partitions)
        if sizes[partition] + len(raw) + 2 > MAX_ENVELOPE_BYTES:
            yield partition, b"[" + b",".join(pending.pop(partition)) + b"]"
            sizes[partition] = 0
        pending[partition].append(raw)
        sizes[partition] += len(raw) + 1
        if len(pending[partition]) >= per_envelope:
            yield partition, b"[" + b",".join(pending.pop(partition)) + b"]"
            sizes[partition] = 0
    for partition, batch in pending.items():
        if batch:
            yield partition, b"[" + b",".join(batch) + b"]"


async def send_envelopes(
    producer: AIOKafkaProducer,
    topic: str,
    raw_events: Iterable[bytes],
    partitions: int,
    per_envelope: int = ENVELOPE_EVENTS,
) -> dict[int, int]:
    """Send and wait for acknowledgement; returns the last offset written per partition."""
    futures = []
    for partition, message in envelopes(raw_events, partitions, per_envelope):
        futures.append(await producer.send(topic, message, partition=partition))
    last: dict[int, int] = {}
    for future in futures:
        metadata = await future
        last[metadata.partition] = max(last.get(metadata.partition, -1), metadata.offset)
    return last
