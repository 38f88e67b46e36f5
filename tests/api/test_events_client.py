"""The apps' client, `client.EventsClient`, against a running API whose broker is away: every
event waits and is sent again (same event ids) until the broker is back, and then reaches the
aggregates exactly once. Exposures come from GrowthBook's own SDK through
`growthbook_tracking`, so users per arm equal what the SDK assigned."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from growthbook import GrowthBook

from api.app import create_app
from client import EventsClient, growthbook_tracking
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, EmbeddedBroker, free_port
from pipelines.topics import Topics, ensure_topics
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import counter_totals, cumulative_arms, make_engine, save_catalog
from tests.api.conftest import live_server
from tests.pipeline.draining import drain_pipeline

CATALOG: dict[str, Any] = {
    "metrics": [{"key": "revenue", "kind": "sum"}],
    "experiments": [
        {
            "key": "layout",
            "coverage": 0.9,
            "control": "grid",
            "variants": [{"key": "grid", "weight": 0.5}, {"key": "list", "weight": 0.5}],
            "metrics": ["revenue"],
        }
    ],
}
OUTAGE_SECONDS = 10.0


def test_events_survive_a_broker_outage_and_count_once(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/client.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, parse_catalog(CATALOG))
    keys = {role: create_api_key(engine, role, role) for role in ("client", "sdk")}
    namespace = f"c{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database, namespace=namespace, partitions=4, kafka_flavor="tansu"
    )
    broker_port = free_port()  # nothing listens there yet: the API answers 503
    app = create_app(settings, engine, f"{HOST}:{broker_port}")
    rng = random.Random(3)
    with live_server(app) as url:
        events = EventsClient(url, keys["sdk"], batch_seconds=0.2, max_backoff=2.0)
        growthbook = GrowthBook(
            api_host=url,
            client_key=keys["client"],
            on_experiment_viewed=growthbook_tracking(events),
        )
        growthbook.load_features()
        assigned: Counter[str] = Counter()
        revenue: Counter[str] = Counter()
        for number in range(2000):
            user = f"user-{number}"
            growthbook.set_attributes({"id": user})
            variant = growthbook.eval_feature("layout")
            result = variant.experimentResult
            if result is None or not result.inExperiment:
                continue
            assigned[result.key] += 1
            value = round(rng.uniform(1, 100), 2)
            events.metric(user, "revenue", value, ts=time.time() + 1)
            revenue[result.key] += value
        time.sleep(OUTAGE_SECONDS)  # every batch so far met a 503
        assert events.accepted == 0 and events.retries > 0
        with EmbeddedBroker(port=broker_port) as broker:
            asyncio.run(ensure_topics(broker.url, Topics.of(namespace).layout(4)))
            assert events.close(timeout=120), f"{events.waiting} events left"
            asyncio.run(drain_pipeline(settings, broker.url, engine))
        growthbook.destroy()
    sent = sum(assigned.values()) * 2
    assert events.accepted == sent and events.rejected == 0 and events.dropped == 0
    counters = counter_totals(engine, "applied")
    assert sum(counters.values()) == sent  # each event applied once, retries included
    arms = cumulative_arms(engine, ["layout"])
    for variant in ("grid", "list"):
        stats = arms[("layout", variant, "revenue")]
        assert stats["n"] == assigned[variant]
        assert stats["sum"] == pytest.approx(revenue[variant], rel=1e-9)
    engine.dispose()


def test_a_full_queue_drops_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = f"http://{HOST}:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="client.events"):
        events = EventsClient(unreachable, "key", max_queue=10, batch_events=1000)
        for number in range(15):
            events.metric(f"u{number}", "revenue", 1.0)
        assert events.dropped == 5
        assert not events.close(timeout=0.5)
    assert "queue full" in caplog.text and "unsent" in caplog.text
