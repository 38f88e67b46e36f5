"""A ground-truth event file: simulated traffic plus every kind of trouble, in shuffled order."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.catalog import Catalog, parse_catalog
from jobs.simulate import Effects, Traffic, simulate

CATALOG = {
    "metrics": [
        {"key": "revenue", "kind": "sum", "cap": 120},
        {"key": "purchase", "kind": "conversion"},
        {"key": "orders", "kind": "count"},
        {"key": "errors", "kind": "count"},
        {"key": "aov", "kind": "ratio", "numerator": "revenue", "denominator": "orders"},
    ],
    "flags": [{"key": "f1"}],
    "experiments": [
        {
            "key": "exp-a",
            "flag": "f1",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["revenue", "purchase", "aov"],
            "guardrails": [{"metric": "errors", "bad_direction": "increase"}],
        },
        {
            "key": "exp-b",
            "control": "a",
            "hash_version": 1,
            "variants": [
                {"key": "a", "weight": 0.34},
                {"key": "b", "weight": 0.33},
                {"key": "c", "weight": 0.33},
            ],
            "metrics": ["orders", "revenue"],
        },
        {
            "key": "exp-c",
            "control": "off",
            "coverage": 0.6,
            "variants": [{"key": "off", "weight": 0.5}, {"key": "on", "weight": 0.5}],
            "metrics": ["purchase", "errors"],
        },
    ],
}


@dataclass
class EventFile:
    lines: list[str]
    clean: list[dict[str, Any]]  # the good events, in file (arrival) order, duplicates kept
    injected: Counter[str]  # reason → how many bad lines
    catalog: Catalog


def generate(users: int, seed: int = 3) -> EventFile:
    catalog = parse_catalog(CATALOG)
    rng = random.Random(seed)
    traffic = Traffic(users=users, start_ts=1_764_000_000.0, days=2.0, seed=seed)
    effects = Effects(purchase={("exp-a", "treatment"): 1.1}, errors={("exp-c", "on"): 1.3})
    events = list(simulate(catalog, traffic, effects))
    # Crossovers: a later exposure of some users to another arm of exp-a.
    for event in [e for e in events if e["type"] == "exposure" and e["experiment"] == "exp-a"]:
        if rng.random() < 0.03:
            other = "control" if event["variant"] == "treatment" else "treatment"
            events.append(
                {
                    **event,
                    "event_id": f"x-{event['event_id']}",
                    "variant": other,
                    "ts": event["ts"] + 60,
                }
            )
    # Timestamps in both wire forms.
    for event in events:
        if rng.random() < 0.3:
            event["ts"] = datetime.fromtimestamp(event["ts"], UTC).isoformat()
    rng.shuffle(events)  # out of order: metrics before exposures, late pre-period events
    duplicates = [dict(e) for e in rng.sample(events, len(events) // 30)]
    for duplicate in duplicates:
        events.insert(rng.randrange(len(events) + 1), duplicate)
    lines: list[tuple[int, str]] = []
    for index, event in enumerate(events):
        lines.append((index, json.dumps(event)))
    clean = [e for _, e in sorted(enumerate(events))]
    bad = _bad_lines(rng)
    injected: Counter[str] = Counter(reason for reason, _ in bad)
    text_lines = [text for _, text in lines]
    for _, text in bad:
        text_lines.insert(rng.randrange(len(text_lines) + 1), text)
    return EventFile(text_lines, clean, injected, catalog)


def _bad_lines(rng: random.Random) -> list[tuple[str, str]]:
    def event(**overrides: Any) -> dict[str, Any]:
        base = {
            "type": "metric",
            "event_id": f"bad-{rng.getrandbits(64)}",
            "ts": 1_764_000_000.0,
            "user_id": f"user-{rng.randrange(50)}",
            "metric": "revenue",
            "value": 3.0,
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    bad = []
    for _ in range(40):
        bad.append(("malformed_json", '{"type": "metric", "user_id": "u1", "value": 1'))
        bad.append(("unknown_type", json.dumps(event(type="click"))))
        bad.append(("missing_field:user_id", json.dumps(event(user_id=None))))
        bad.append(("bad_type:value", json.dumps(event(value="12"))))
        bad.append(("non_finite_value", json.dumps(event(value=float("nan")))))
        bad.append(
            (
                "unknown_experiment",
                json.dumps(
                    event(type="exposure", metric=None, value=None, experiment="nope", variant="a")
                ),
            )
        )
        bad.append(
            (
                "unknown_variant",
                json.dumps(
                    event(
                        type="exposure", metric=None, value=None, experiment="exp-a", variant="zzz"
                    )
                ),
            )
        )
        bad.append(("unknown_metric", json.dumps(event(metric="clicks"))))
    for _ in range(5):
        bad.append(("too_large", json.dumps(event(padding="x" * 70_000))))
    # Poison pills: valid types, values that once overflowed a window start or a sum of squares.
    for _ in range(10):
        for ts in (1e300, -1e300, 1e18):
            bad.append(("ts_out_of_range", json.dumps(event(ts=ts))))
            bad.append(
                (
                    "ts_out_of_range",
                    json.dumps(
                        event(
                            ts=ts,
                            type="exposure",
                            metric=None,
                            value=None,
                            experiment="exp-a",
                            variant="control",
                        )
                    ),
                )
            )
        for value in (1e300, -1e300, 1e200):
            bad.append(("value_out_of_range", json.dumps(event(value=value))))
    return bad
