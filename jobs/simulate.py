"""Simulated traffic: users assigned by the same hashing the API serves, with pre-period
activity (for CUPED) and configurable true effects per experiment arm."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from config.catalog import Catalog, parse_catalog
from stats.assignment import assign

DAY = 86400.0

DEMO_CATALOG: dict[str, Any] = {
    "metrics": [
        {"key": "revenue", "kind": "sum", "cap": 1000},
        {"key": "purchase", "kind": "conversion"},
        {"key": "orders", "kind": "count"},
        {"key": "aov", "kind": "ratio", "numerator": "revenue", "denominator": "orders"},
        {"key": "errors", "kind": "count", "higher_is_better": False},
    ],
    "flags": [
        {"key": "new-checkout", "enabled": True, "rollout": 1.0},
        {"key": "banner", "enabled": True, "rollout": 1.0},
        {"key": "search-v2", "type": "boolean", "default": False},
        {"key": "payments-v2", "type": "boolean", "default": False},
    ],
    "experiments": [
        {
            "key": "checkout-lift",
            "flag": "new-checkout",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["revenue", "purchase", "aov"],
        },
        {
            "key": "aa-test",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["revenue", "purchase"],
        },
        {
            "key": "risky-banner",
            "flag": "banner",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["purchase"],
            "guardrails": [
                {
                    "metric": "errors",
                    "bad_direction": "increase",
                    "margin": 0.0,
                    "min_users": 500,
                    "action": "rollback",
                }
            ],
        },
    ],
}


# The demo's staged rollouts (docs/design.md §18): the flag's new value in five monitored stages.
DEMO_ROLLOUT: dict[str, Any] = {
    "value": True,
    "stages": [
        *(
            {"percent": p, "trigger": "metric", "min_users": 150, "min_duration_seconds": 3600}
            for p in (1, 5, 10, 25, 50)
        ),
        {"percent": 100},
    ],
    "guardrails": [{"metric": "errors", "bad_direction": "increase", "min_users": 150}],
}


def demo_catalog() -> Catalog:
    return parse_catalog(DEMO_CATALOG)


@dataclass(frozen=True)
class Effects:
    """Multipliers on a user's behaviour when in an arm: (experiment, variant) → factor."""

    purchase: dict[tuple[str, str], float] = field(default_factory=dict)
    revenue: dict[tuple[str, str], float] = field(default_factory=dict)
    errors: dict[tuple[str, str], float] = field(default_factory=dict)


DEMO_EFFECTS = Effects(
    purchase={("checkout-lift", "treatment"): 1.03},
    revenue={("checkout-lift", "treatment"): 1.05 / 1.03},  # +5% revenue per user in all
    errors={("risky-banner", "treatment"): 1.30},
)


@dataclass(frozen=True)
class Traffic:
    users: int
    start_ts: float
    days: float = 3.0
    lookback_days: float = 14.0
    base_purchase: float = 0.75
    base_errors: float = 0.6
    seed: int = 7


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: means here are small.
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def recent_start(days: float = 3.0) -> float:
    """A start time whose traffic of ``days`` (and a day of activity after) ends before now, on
    an hour boundary: simulated events stay within the default event-time bounds."""
    return math.floor((time.time() - (days + 2) * DAY) / 3600) * 3600


def simulate(catalog: Catalog, traffic: Traffic, effects: Effects) -> Iterator[dict[str, Any]]:
    """Events per user in time order: pre-period activity, exposures, then post activity."""
    rng = random.Random(traffic.seed)
    running = [e for e in catalog.experiments if e.status == "running"]
    for number in range(traffic.users):
        user_id = f"user-{number}"
        first_seen = traffic.start_ts + rng.uniform(0, traffic.days * DAY)
        spend = rng.gammavariate(4.0, 12.5)  # a user-level trait: what CUPED exploits
        arms = []
        for experiment in running:
            index = assign(
                user_id,
                experiment.hashing_seed,
                [v.weight for v in experiment.variants],
                experiment.coverage,
                experiment.hash_version,
            )
            if index >= 0:
                arms.append((experiment.key, experiment.variants[index].key))
        purchase_factor = math.prod(effects.purchase.get(a, 1.0) for a in arms)
        revenue_factor = math.prod(effects.revenue.get(a, 1.0) for a in arms)
        errors_factor = math.prod(effects.errors.get(a, 1.0) for a in arms)
        lookback = traffic.lookback_days * DAY
        for _ in range(poisson(rng, 1.5)):
            yield _purchase(rng, user_id, first_seen - rng.uniform(1, lookback), spend)
        for offset, (experiment_key, variant) in enumerate(arms):
            yield {
                "type": "exposure",
                "event_id": _event_id(rng),
                "ts": first_seen + offset,
                "user_id": user_id,
                "experiment": experiment_key,
                "variant": variant,
            }
        horizon = first_seen + len(arms) + 1
        if rng.random() < min(1.0, traffic.base_purchase * purchase_factor):
            for _ in range(1 + poisson(rng, 0.5)):
                yield from _purchase_events(
                    rng, user_id, horizon + rng.uniform(0, DAY), spend * revenue_factor
                )
        for _ in range(poisson(rng, traffic.base_errors * errors_factor)):
            yield {
                "type": "metric",
                "event_id": _event_id(rng),
                "ts": horizon + rng.uniform(0, DAY),
                "user_id": user_id,
                "metric": "errors",
                "value": 1,
            }


def _purchase(rng: random.Random, user_id: str, ts: float, mean: float) -> dict[str, Any]:
    return {
        "type": "metric",
        "event_id": _event_id(rng),
        "ts": ts,
        "user_id": user_id,
        "metric": "revenue",
        "value": round(rng.gammavariate(8.0, mean / 8.0), 2),
    }


def _purchase_events(
    rng: random.Random, user_id: str, ts: float, mean: float
) -> Iterator[dict[str, Any]]:
    yield _purchase(rng, user_id, ts, mean)
    yield {
        "type": "metric",
        "event_id": _event_id(rng),
        "ts": ts,
        "user_id": user_id,
        "metric": "purchase",
        "value": 1,
    }
    yield {
        "type": "metric",
        "event_id": _event_id(rng),
        "ts": ts,
        "user_id": user_id,
        "metric": "orders",
        "value": 1,
    }
