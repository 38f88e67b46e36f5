"""The mypyc extension that make builds from pipelines/attribution.py books exactly what its
Python source books: the same window rows, counters, duplicates and user states, on the
ground-truth generator's events (late, duplicated, capped, ratio, crossover) cut into units."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from pipelines import attribution
from pipelines.events import CatalogIndex, Event, decode_message
from pipelines.user_state import decode_state, encode_state
from tests.conftest import HISTORICAL
from tests.pipeline.generate import generate

SOURCE = Path(attribution.__file__).with_name("attribution.py")


def source_module() -> ModuleType:
    """pipelines/attribution.py run as Python, beside the extension Python imports first."""
    spec = importlib.util.spec_from_file_location("pipelines.attribution_source", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def units(events: list[Event], seed: int) -> list[tuple[str, list[Event]]]:
    """Each user's events in arrival order, cut into runs of 1 to 40 (one unit of work each)."""
    rng = random.Random(seed)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)
    position: dict[str, int] = defaultdict(int)
    cut = []
    for event in events:
        user = event.user_id
        if position[user] < len(by_user[user]):
            size = rng.choice([1, 1, 2, 3, 17, 40])
            cut.append((user, by_user[user][position[user] : position[user] + size]))
            position[user] += size
    return cut


def book(module: ModuleType, config: object, cut: list[tuple[str, list[Event]]]) -> tuple:
    aggregates = module.Aggregates()
    attribution_ = module.UserAttribution(config, aggregates)
    store: dict[str, bytes] = {}
    duplicates = 0
    for user, events in cut:
        previous = store.get(user)
        state, found = attribution_.apply(
            decode_state(previous) if previous is not None else None, events
        )
        duplicates += found
        store[user] = encode_state(state)
    return aggregates.windows, dict(aggregates.counters), duplicates, store


@pytest.mark.skipif(
    Path(attribution.__file__) == SOURCE, reason="no extension built: run `make native`"
)
@pytest.mark.parametrize(
    ("buffer_size", "dedup_size", "lookback"),
    [(256, 1024, 14 * 86400.0), (4, 3, 3600.0), (2, 1, 600.0), (7, 20, 86400.0)],
)
def test_the_extension_books_what_its_source_books(
    buffer_size: int, dedup_size: int, lookback: float
) -> None:
    source = source_module()
    file = generate(300, seed=buffer_size + dedup_size)
    index = CatalogIndex.of(file.catalog, HISTORICAL)
    events = [e for line in file.lines for e in decode_message(line.encode(), index).events]
    cut = units(events, seed=dedup_size)
    results = []
    for module in (attribution, source):
        config = module.AttributionConfig.of(file.catalog, 3600, lookback)
        config = replace(config, buffer_size=buffer_size, dedup_size=dedup_size)
        results.append(book(module, config, cut))
    compiled, interpreted = results
    assert len(compiled[0]) > 500 and compiled[2] > 0  # windows booked, duplicates found
    assert compiled == interpreted
