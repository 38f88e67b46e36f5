"""A partition's batch split into units of work bounded in raw bytes, order and messages kept;
totals filled in for state written before they were kept."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from pipelines.state_keys import (
    decode_window_value,
    encode_total_key,
    encode_window_key,
    encode_window_value,
)
from pipelines.unit_of_work import missing_totals, units_of_work


@given(sizes=st.lists(st.integers(0, 40), max_size=60), limit=st.integers(1, 100))
def test_units_keep_every_message_in_order_within_the_limit(sizes: list[int], limit: int) -> None:
    messages = [(offset, b"x" * size) for offset, size in enumerate(sizes)]
    units = units_of_work(messages, limit)
    assert [message for unit in units for message in unit] == messages
    for unit in units:
        assert unit
        assert len(unit) == 1 or sum(len(raw) for _, raw in unit) <= limit
    # Greedy: a unit ends only where the next message would not fit.
    for unit, following in pairwise(units):
        assert sum(len(raw) for _, raw in unit) + len(following[0][1]) > limit


@given(
    windows=st.lists(
        st.tuples(
            st.sampled_from(["e1", "e2"]),
            st.sampled_from(["a", "b"]),
            st.integers(0, 5),  # window
            st.integers(0, 2),  # partition
            st.lists(st.integers(-50, 50), min_size=9, max_size=9),
        ),
        max_size=40,
        unique_by=lambda w: w[:4],
    ),
    kept=st.sets(st.tuples(st.sampled_from(["e1", "e2"]), st.sampled_from(["a", "b"]))),
)
def test_missing_totals_are_the_window_sums_of_the_partition(
    windows: list[tuple[str, str, int, int, list[int]]], kept: set[tuple[str, str]]
) -> None:
    """State from before totals were kept: each (experiment, variant, metric) of the partition
    with windows and no total gets the sum of its windows, fenced at the applied offset; a
    total that is there is left alone."""
    data = {
        encode_window_key(e, v, "m", w * 3600, p): encode_window_value([float(x) for x in row], 3)
        for e, v, w, p, row in windows
    }
    data |= {encode_total_key(e, v, "m", 1): encode_window_value([0.0] * 9, 5) for e, v in kept}
    written = dict(missing_totals(data, 1, applied=11))
    expected: dict[bytes, list[float]] = {}
    for e, v, _w, p, row in windows:
        if p == 1 and (e, v) not in kept:
            key = encode_total_key(e, v, "m", 1)
            expected[key] = [a + b for a, b in zip(expected.get(key, [0.0] * 9), row, strict=True)]
    assert {k: decode_window_value(v) for k, v in written.items()} == {
        k: (row, 11) for k, row in expected.items()
    }
