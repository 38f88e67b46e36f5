"""Every state key and value round-trips through its paired encode/decode functions, and the
partition is read back from any key without parsing the rest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from config.catalog import KEY_SEP
from pipelines.state_keys import (
    CounterKey,
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
from stats.sufficient import STATISTICS

# Anything but the separator (catalog keys are far narrower; topics and counter keys are not).
texts = st.text(st.characters(blacklist_characters=KEY_SEP, blacklist_categories=["Cs"]))
partitions = st.integers(0, 10_000)
finite = st.floats(allow_nan=False, allow_infinity=False)


@given(texts, texts, texts, st.integers(-(2**40), 2**40), partitions)
def test_window_keys_round_trip(
    experiment: str, variant: str, metric: str, window_start: int, partition: int
) -> None:
    raw = encode_window_key(experiment, variant, metric, window_start, partition)
    assert decode_key(raw) == WindowKey(experiment, variant, metric, window_start, partition)
    assert partition_of_key(raw) == partition


@given(texts, texts, texts, partitions)
def test_total_keys_round_trip(experiment: str, variant: str, metric: str, partition: int) -> None:
    raw = encode_total_key(experiment, variant, metric, partition)
    decoded = decode_key(raw)
    assert isinstance(decoded, TotalKey)
    assert decoded == TotalKey(experiment, variant, metric, partition)
    assert partition_of_key(raw) == partition


@given(texts, texts, partitions)
def test_counter_and_offset_keys_round_trip(name: str, key: str, partition: int) -> None:
    raw = encode_counter_key(name, key, partition)
    assert decode_key(raw) == CounterKey(name, key, partition)
    assert partition_of_key(raw) == partition
    assert decode_key(encode_offset_key(key, partition)) == CounterKey("offset", key, partition)


@given(st.lists(finite, min_size=len(STATISTICS), max_size=len(STATISTICS)), st.integers(0, 2**62))
def test_values_round_trip(statistics: list[float], offset: int) -> None:
    assert decode_window_value(encode_window_value(statistics, offset)) == (statistics, offset)
    assert decode_counter_value(encode_counter_value(statistics[0], offset)) == (
        statistics[0],
        offset,
    )


def test_a_window_key_and_a_counter_key_never_collide() -> None:
    assert decode_key(encode_window_key("a", "b", "c", 1, 2)) != decode_key(
        encode_counter_key("a", "b", 2)
    )
