"""A property-based run of the OpenAPI schema (schemathesis strategies under hypothesis): whatever
it sends to any operation, no 5xx."""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from pipelines.topics import Topics, ensure_topics
from sinks.sql.keys import create_api_key
from tests.api.conftest import auth, make_client
from tests.conftest import Broker

EXAMPLES = 25


def test_no_server_errors(engine: Engine, apache_kafka: Broker) -> None:
    asyncio.run(ensure_topics(apache_kafka.bootstrap, Topics.of("fuzz").layout(4)))
    headers = auth(create_api_key(engine, "admin", "fuzz"))
    with make_client(engine, apache_kafka.bootstrap, namespace="fuzz") as client:
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        failures: list[str] = []
        statuses: set[int] = set()
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
            def no_5xx(case: schemathesis.Case) -> None:
                response = case.call(headers=headers)
                statuses.add(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

            no_5xx()
    assert failures == []
    assert {200, 201, 202, 422} <= statuses  # the calls reached the app, authenticated
