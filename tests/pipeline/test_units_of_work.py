"""A partition's batch split into units of work bounded in raw bytes, order and messages kept."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from pipelines.unit_of_work import units_of_work


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
