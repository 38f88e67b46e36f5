"""The API through a database outage (PostgreSQL 15 of its own, stopped with ``pg_ctl stop -m
immediate`` and started again, the API served by uvicorn): assignments, flag evaluation and the
SDK payload answer 200 from the last catalog and keys; writes answer 503 with Retry-After;
``/ready`` says 503; a handful of log lines, not a traceback per request; all recovers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from api.app import create_app
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog
from tests.api.conftest import CATALOG, auth, live_server
from tests.services.postgres import PostgresCluster

OUR_LOGGERS = {"api", "pipelines", "sinks", "uvicorn", "fastapi"}
OUTAGE_SECONDS = 12.0  # longer than every cache of the API (catalog 1 s, keys 5 s)


@pytest.fixture()
def cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_api_serves_through_a_database_outage(
    cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade_to_head(cluster.url)
    engine = make_engine(cluster.url)
    save_catalog(engine, parse_catalog(CATALOG))
    roles = ("sdk", "client", "developer", "viewer")
    keys = {role: create_api_key(engine, role, role) for role in roles}
    settings = Settings(database_url=cluster.url, namespace="outage", partitions=4)
    app = create_app(settings, engine, f"{HOST}:{free_port()}")
    sdk, developer = auth(keys["sdk"]), auth(keys["developer"])
    experiment = {
        "key": "late",
        "control": "a",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    }

    def reads(client: httpx.Client) -> list[httpx.Response]:
        return [
            client.get("/v1/assignments?user_id=u-1", headers=sdk),
            client.post("/v1/flags/evaluate", json={"user_id": "u-1"}, headers=sdk),
            client.get(f"/api/features/{keys['client']}"),
        ]

    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        before = [r.json() for r in reads(client)]
        assert all(before)
        assert client.get("/v1/flags", headers=developer).status_code == 200  # a key seen
        caplog.clear()
        with caplog.at_level(logging.INFO):
            cluster.crash()
            deadline = time.monotonic() + OUTAGE_SECONDS
            answered = 0
            while time.monotonic() < deadline:
                during = reads(client)
                assert [r.status_code for r in during] == [200, 200, 200], [r.text for r in during]
                assert [r.json() for r in during] == before  # the last catalog
                answered += 1
                time.sleep(0.2)
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["database"] != "ok"
            write = client.post("/v1/experiments", json=experiment, headers=developer)
            assert write.status_code == 503 and write.headers["Retry-After"] == "5", write.text
            unseen = client.get("/v1/flags", headers=auth(keys["viewer"]))
            assert unseen.status_code == 503 and "cannot be checked" in unseen.text
            lines = [  # this server's (other tests' leftover clients may log too)
                r
                for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.split(".")[0] in OUR_LOGGERS
            ]
            assert answered > 20 and len(lines) <= 5, [r.getMessage() for r in lines]
            assert not any(r.exc_info for r in lines)  # no tracebacks
        cluster.resume()
        deadline = time.monotonic() + 20
        while client.get("/ready").json()["database"] != "ok":  # no broker here: 503 anyway
            assert time.monotonic() < deadline, "the API did not see the database return"
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while (
            created := client.post("/v1/experiments", json=experiment, headers=developer)
        ).status_code == 503:
            assert time.monotonic() < deadline, created.text
            time.sleep(0.5)
        assert created.status_code == 201, created.text
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM experiments WHERE key = 'late'")
            ).scalar_one()
            == 1
        )
    engine.dispose()
