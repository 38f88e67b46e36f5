"""Simulated traffic for the demo: users assigned by the same hashing the API serves."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stats.assignment import assign


@dataclass(frozen=True)
class SimulatedExperiment:
    key: str
    variants: tuple[str, ...]
    weights: tuple[float, ...]
    coverage: float = 1.0
    hash_version: int = 2


def exposure_events(
    experiment: SimulatedExperiment, users: int, seed: int = 7, start_ts: float | None = None
) -> Iterator[dict[str, Any]]:
    """One to three exposure events per user in coverage (repeats are what real SDKs send)."""
    rng = random.Random(seed)
    now = time.time() if start_ts is None else start_ts
    for number in range(users):
        user_id = f"user-{number}"
        index = assign(
            user_id,
            experiment.key,
            experiment.weights,
            experiment.coverage,
            experiment.hash_version,
        )
        if index < 0:
            continue
        for _ in range(rng.randint(1, 3)):
            yield {
                "type": "exposure",
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "ts": now + rng.uniform(0, 3600),
                "user_id": user_id,
                "experiment": experiment.key,
                "variant": experiment.variants[index],
            }
