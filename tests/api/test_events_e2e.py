"""POST /v1/events end to end: through the API to the real broker, through the pipeline into the
aggregates, which equal a pandas computation from the posted events."""

from __future__ import annotations

import asyncio
import uuid

import pandas as pd
import pytest
from sqlalchemy import Engine

from config.settings import Settings
from pipelines.topics import Topics, ensure_topics
from sinks.sql.keys import create_api_key
from sinks.sql.store import cumulative_arms
from tests.api.conftest import auth, make_client
from tests.conftest import Broker
from tests.pipeline.draining import drain_pipeline


def test_posted_events_reach_the_aggregates(engine: Engine, apache_kafka: Broker) -> None:
    namespace = f"api{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(apache_kafka.bootstrap, Topics.of(namespace).layout(4)))
    events = []
    sdk_key = auth(create_api_key(engine, "sdk", "e2e"))
    with make_client(engine, apache_kafka.bootstrap, namespace=namespace) as client:
        for number in range(300):
            user = f"user-{number}"
            [assignment] = client.get(
                f"/v1/assignments?user_id={user}&experiment=checkout", headers=sdk_key
            ).json()["assignments"]
            events.append(
                {
                    "type": "exposure",
                    "event_id": f"x-{number}",
                    "ts": 1_764_000_000 + number,
                    "user_id": user,
                    "experiment": "checkout",
                    "variant": assignment["variant"],
                }
            )
            for k in range(number % 3):
                events.append(
                    {
                        "type": "metric",
                        "event_id": f"m-{number}-{k}",
                        "ts": 1_764_000_100 + number + k,
                        "user_id": user,
                        "metric": "revenue",
                        "value": float(number % 7 + k),
                    }
                )
        bad = {"type": "metric", "event_id": "b", "ts": 1, "user_id": "u", "metric": "nope"}
        for start in range(0, len(events), 250):
            response = client.post(
                "/v1/events", json={"events": [*events[start : start + 250], bad]}, headers=sdk_key
            )
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["accepted"] == len(events[start : start + 250]) and body["rejected"] == 1

    settings = Settings(
        database_url=str(engine.url), namespace=namespace, partitions=4, flush_seconds=0.5
    )
    asyncio.run(drain_pipeline(settings, apache_kafka.bootstrap, engine))

    frame = pd.DataFrame(events)
    exposed = frame[frame["type"] == "exposure"].set_index("user_id")["variant"]
    revenue = frame[frame["type"] == "metric"].groupby("user_id")["value"].sum()
    per_user = pd.DataFrame(
        {"variant": exposed, "y": revenue.reindex(exposed.index, fill_value=0.0)}
    )
    truth = per_user.groupby("variant")["y"].agg(["count", "sum", lambda y: (y**2).sum()])
    arms = cumulative_arms(engine, ["checkout"])
    for variant, row in truth.iterrows():
        got = arms[("checkout", str(variant), "revenue")]
        assert got["n"] == row["count"]
        assert got["sum"] == pytest.approx(row["sum"])
        assert got["sum_sq"] == pytest.approx(row.iloc[2])
