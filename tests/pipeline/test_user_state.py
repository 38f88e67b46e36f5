"""The user state's compact parts against plain oracles: event ids kept as one escaped string
(de-duplication), and the pre-exposure buffer kept as packed records (docs/design.md §5's bounds).
Every call round-trips the state through its MessagePack encoding, as the worker does."""

from __future__ import annotations

import math
from dataclasses import replace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.catalog import parse_catalog
from pipelines.attribution import Aggregates, AttributionConfig, UserAttribution
from pipelines.events import Event, Exposure, MetricEvent
from pipelines.user_state import StateLayoutError, UserState, decode_state, encode_state
from stats.sufficient import STATISTICS

CATALOG = parse_catalog(
    {
        "metrics": [{"key": "spend", "kind": "sum"}],
        "flags": [],
        "experiments": [
            {
                "key": "e",
                "control": "control",
                "variants": [
                    {"key": "control", "weight": 0.5},
                    {"key": "treatment", "weight": 0.5},
                ],
                "metrics": ["spend"],
            }
        ],
    }
)
# Ids from an alphabet holding the string's separator and escape characters.
IDS = st.text(alphabet="ab\x00\x01", min_size=1, max_size=4)


def run_calls(config: AttributionConfig, calls: list[list[Event]]) -> tuple[Aggregates, list[int]]:
    aggregates = Aggregates()
    attribution = UserAttribution(config, aggregates)
    state: UserState | None = None
    duplicates = []
    for events in calls:
        state, found = attribution.apply(state, events)
        state = decode_state(encode_state(state))
        duplicates.append(found)
    return aggregates, duplicates


@settings(max_examples=300, deadline=None)
@given(
    calls=st.lists(st.lists(IDS, min_size=1, max_size=40), min_size=1, max_size=6),
    dedup_size=st.integers(1, 12),
)
def test_duplicates_match_a_list_of_recent_ids(calls: list[list[str]], dedup_size: int) -> None:
    config = replace(AttributionConfig.of(CATALOG, 3600, 86400.0), dedup_size=dedup_size)
    events: list[list[Event]] = [
        [MetricEvent(event_id, 1.0, "u", "spend", 1.0) for event_id in call] for call in calls
    ]
    _, duplicates = run_calls(config, events)
    kept: list[str] = []
    expected = []
    for call in calls:
        fresh: list[str] = []
        found = 0
        for event_id in call:
            if event_id in kept or event_id in fresh:
                found += 1
            else:
                fresh.append(event_id)
        expected.append(found)
        kept = (kept + fresh)[-dedup_size:]
    assert duplicates == expected


@settings(max_examples=300, deadline=None)
@given(
    metric_times=st.lists(st.integers(0, 400), min_size=1, max_size=30),
    exposure_time=st.integers(0, 400),
    buffer_size=st.integers(1, 8),
)
def test_an_exposure_uses_the_bounded_buffer(
    metric_times: list[int], exposure_time: int, buffer_size: int
) -> None:
    lookback = 100.0
    config = replace(AttributionConfig.of(CATALOG, 50, lookback), buffer_size=buffer_size)
    values = [float(i + 1) for i in range(len(metric_times))]  # integers: sums are exact
    events: list[Event] = [
        MetricEvent(f"m{i}", float(ts), "u", "spend", value)
        for i, (ts, value) in enumerate(zip(metric_times, values, strict=True))
    ]
    events.append(Exposure("x", float(exposure_time), "u", "e", "control"))
    aggregates, _ = run_calls(config, [events[:-1], events[-1:]])

    # docs/design.md §5: the latest buffer_size events, none more than 2L older than the newest.
    buffer: list[tuple[float, float]] = []
    newest = -math.inf
    for ts, value in zip(metric_times, values, strict=True):
        newest = max(newest, ts)
        buffer.append((ts, value))
        oldest = newest - 2 * lookback
        if len(buffer) > buffer_size or buffer[0][0] < oldest:
            buffer = [item for item in buffer if item[0] >= oldest][-buffer_size:]
    y = sum(value for ts, value in buffer if ts >= exposure_time)
    x = sum(value for ts, value in buffer if exposure_time - lookback <= ts < exposure_time)
    rows = [row for key, row in aggregates.windows.items() if key[:3] == ("e", "control", "spend")]
    totals = {name: sum(row[STATISTICS.index(name)] for row in rows) for name in STATISTICS}
    assert (totals["n"], totals["sum"], totals["x_sum"], totals["xy_sum"]) == (1.0, y, x, x * y)


def test_a_state_in_the_former_layout_is_refused_with_what_to_do() -> None:
    former = msgspec.msgpack.encode({"ids": ["a"], "exp": {}, "xo": [], "raw": {}, "buf": []})
    with pytest.raises(StateLayoutError, match="XPSTREAM_NAMESPACE"):
        decode_state(former)
