"""Vectorised murmur2 routing against aiokafka's murmur2 (a port of the Java client's)."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2

from pipelines.producer import murmur2_many, partition_for, partitions_for

ALPHABET = "abcXYZ09-_.é漢😀"


def test_murmur2_many_equals_aiokafka_on_every_length_and_alphabet() -> None:
    rng = random.Random(7)
    keys = [
        "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 41))).encode()
        for _ in range(5000)
    ]
    assert murmur2_many(keys).tolist() == [murmur2(key) & 0xFFFFFFFF for key in keys]


def test_known_java_client_value() -> None:
    # Kafka's UtilsTest: murmur2("21") == -973932308 as a Java int.
    assert int(murmur2_many([b"21"])[0]) == -973932308 & 0xFFFFFFFF


@pytest.mark.parametrize("partitions", [1, 4, 7, 8])
def test_partitions_for_equals_the_scalar_routing(partitions: int) -> None:
    rng = random.Random(partitions)
    users = [f"user-{rng.getrandbits(40)}-{rng.choice(ALPHABET)}" for _ in range(2000)]
    assert partitions_for(users, partitions) == [partition_for(u, partitions) for u in users]
