"""Decoding and validation of single events and envelopes, reason by reason."""

from __future__ import annotations

import calendar
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.simulate import demo_catalog
from pipelines.events import CatalogIndex, Exposure, MetricEvent, decode_message
from tests.conftest import HISTORICAL

INDEX = CatalogIndex.of(demo_catalog(), HISTORICAL)
GOOD_METRIC = {
    "type": "metric",
    "event_id": "m1",
    "ts": 1764237600.5,
    "user_id": "u1",
    "metric": "revenue",
    "value": 12.5,
}
GOOD_EXPOSURE = {
    "type": "exposure",
    "event_id": "e1",
    "ts": "2026-11-27T10:00:00Z",
    "user_id": "u1",
    "experiment": "aa-test",
    "variant": "treatment",
}


def reasons(raw: bytes) -> list[str]:
    return [r.reason for r in decode_message(raw, INDEX).rejections]


def test_good_events_and_rfc3339_time() -> None:
    decoded = decode_message(json.dumps([GOOD_METRIC, GOOD_EXPOSURE]).encode(), INDEX)
    assert decoded.rejections == []
    metric, exposure = decoded.events
    assert isinstance(metric, MetricEvent) and metric.value == 12.5
    assert isinstance(exposure, Exposure)
    assert exposure.ts == calendar.timegm((2026, 11, 27, 10, 0, 0))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "click"}, "unknown_type"),
        ({"user_id": None}, "missing_field:user_id"),
        ({"user_id": 7}, "bad_type:user_id"),
        ({"value": "12"}, "bad_type:value"),
        ({"value": True}, "bad_type:value"),
        ({"ts": "yesterday"}, "bad_type:ts"),
        ({"ts": "2026-11-27T10:00:00"}, "bad_type:ts"),
        ({"metric": "clicks"}, "unknown_metric"),
        ({"metric": "aov"}, "unknown_metric"),
        ({"value": None}, "missing_field:value"),
        ({"value": 10**400}, "non_finite_value"),
    ],
)
def test_each_rejection_reason(change: dict[str, object], reason: str) -> None:
    event = {k: v for k, v in {**GOOD_METRIC, **change}.items() if v is not None}
    assert reasons(json.dumps(event).encode()) == [reason]


def test_exposure_reasons_and_non_finite_and_malformed() -> None:
    assert reasons(json.dumps({**GOOD_EXPOSURE, "experiment": "nope"}).encode()) == [
        "unknown_experiment"
    ]
    assert reasons(json.dumps({**GOOD_EXPOSURE, "variant": "zzz"}).encode()) == ["unknown_variant"]
    assert reasons(json.dumps({**GOOD_METRIC, "value": float("inf")}).encode()) == [
        "non_finite_value"
    ]
    assert reasons(b'{"type": "metric"') == ["malformed_json"]
    assert reasons(b"\xff\xfe") == ["malformed_json"]
    assert reasons(json.dumps({**GOOD_METRIC, "pad": "x" * 70_000}).encode()) == ["too_large"]


def test_a_bad_member_of_an_envelope_is_rejected_alone() -> None:
    envelope = [GOOD_METRIC, {**GOOD_METRIC, "event_id": "m2", "metric": "nope"}, GOOD_EXPOSURE]
    decoded = decode_message(json.dumps(envelope).encode(), INDEX)
    assert len(decoded.events) == 2
    assert [r.reason for r in decoded.rejections] == ["unknown_metric"]
    assert json.loads(decoded.rejections[0].raw)["event_id"] == "m2"


def test_count_metrics_may_omit_the_value() -> None:
    event = {k: v for k, v in GOOD_METRIC.items() if k != "value"} | {"metric": "errors"}
    (decoded,) = decode_message(json.dumps(event).encode(), INDEX).events
    assert isinstance(decoded, MetricEvent) and decoded.value == 1.0


VALID_CHANGES: list[dict[str, object]] = [
    {},
    {"ts": 1764237600},
    {"ts": "2026-11-27T10:00:00.250+01:00"},
    {"value": 3},
    {"metric": "errors", "value": None},
    {"metric": "purchase"},
    {"app": "ios", "type": "metric"},
]
INVALID_CHANGES: list[dict[str, object]] = [
    {"type": "click"},
    {"user_id": ""},
    {"event_id": 5},
    {"value": True},
    {"value": 10**400},
    {"ts": "yesterday"},
    {"metric": "aov"},
]


def _event(number: int, change: dict[str, object], exposure: bool) -> dict[str, object]:
    base = GOOD_EXPOSURE if exposure and not change else GOOD_METRIC
    event = {k: v for k, v in {**base, **change}.items() if v is not None}
    return event | {"event_id": f"x{number}"} if "event_id" not in change else event


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(VALID_CHANGES + INVALID_CHANGES), st.booleans(), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_an_envelope_decodes_as_its_events_one_by_one(
    members: list[tuple[dict[str, object], bool, bool]],
) -> None:
    """Oracle: each member sent alone, which always takes the per-event validator."""
    events = []
    for number, (change, exposure, flip) in enumerate(members):
        event = _event(number, change, exposure)
        events.append(dict(reversed(event.items())) if flip else event)
    envelope = decode_message(json.dumps(events).encode(), INDEX)
    alone = [decode_message(json.dumps(event).encode(), INDEX) for event in events]
    assert envelope.events == [e for one in alone for e in one.events]
    assert [r.reason for r in envelope.rejections] == [
        r.reason for one in alone for r in one.rejections
    ]


NOW = 1_764_300_000.0  # a fixed "now" for the default bounds: 400 days back, 1 day ahead
DEFAULT_INDEX = CatalogIndex.of(demo_catalog())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ts": 1e300}, "ts_out_of_range"),
        ({"ts": -1e300}, "ts_out_of_range"),
        ({"ts": 1e18}, "ts_out_of_range"),
        ({"ts": NOW + 1.5 * 86400}, "ts_out_of_range"),
        ({"ts": NOW - 401 * 86400}, "ts_out_of_range"),
        ({"ts": "9999-12-31T00:00:00Z"}, "ts_out_of_range"),
        ({"value": 1e300}, "value_out_of_range"),
        ({"value": -1e300}, "value_out_of_range"),
        ({"value": 1e200}, "value_out_of_range"),
        ({"value": 10**400}, "non_finite_value"),
        ({"value": 1e12 + 1e6}, "value_out_of_range"),
    ],
)
def test_events_beyond_the_bounds_are_refused_alone_and_in_envelopes(
    change: dict[str, object], reason: str
) -> None:
    poison = {**GOOD_METRIC, **change, "event_id": "poison"}
    good = {**GOOD_METRIC, "ts": NOW - 3600}
    for raw in (json.dumps(poison).encode(), json.dumps([good, poison, good]).encode()):
        decoded = decode_message(raw, DEFAULT_INDEX, now=NOW)
        assert [r.reason for r in decoded.rejections] == [reason]
        assert all(e.event_id != "poison" for e in decoded.events)


def test_events_at_the_bounds_pass() -> None:
    edges = [
        {**GOOD_METRIC, "event_id": "old", "ts": NOW - 400 * 86400},
        {**GOOD_METRIC, "event_id": "ahead", "ts": NOW + 86400},
        {**GOOD_METRIC, "event_id": "big", "value": -1e12},
    ]
    decoded = decode_message(json.dumps(edges).encode(), DEFAULT_INDEX, now=NOW)
    assert decoded.rejections == [] and [e.event_id for e in decoded.events] == [
        "old",
        "ahead",
        "big",
    ]
