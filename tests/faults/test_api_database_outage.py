"""`xpstream api` through a database outage (PostgreSQL 15 of its own, stopped with ``pg_ctl
stop -m immediate`` and started again): assignments, flag evaluation and the SDK payload answer
200 from the last catalog and keys; writes answer 503 with Retry-After; ``/ready`` says 503; a
handful of log lines, not a traceback per request; all recovers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from config.catalog import parse_catalog
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog
from tests.api.conftest import CATALOG, auth
from tests.pipeline.conftest import XPSTREAM
from tests.services.postgres import PostgresCluster

OUTAGE_SECONDS = 12.0  # longer than every cache of the API (catalog 1 s, keys 5 s)


@pytest.fixture()
def cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(durable=True).start()  # the keys made just before survive
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_api_serves_through_a_database_outage(cluster: PostgresCluster, tmp_path: Path) -> None:
    upgrade_to_head(cluster.url)
    engine = make_engine(cluster.url)
    save_catalog(engine, parse_catalog(CATALOG))
    roles = ("sdk", "client", "developer", "viewer")
    keys = {role: create_api_key(engine, role, role) for role in roles}
    sdk, developer = auth(keys["sdk"]), auth(keys["developer"])
    experiment = {
        "key": "late",
        "control": "a",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    }
    port, log = free_port(), tmp_path / "api.log"
    env = {
        **os.environ,
        "XPSTREAM_DATABASE_URL": cluster.url,
        "XPSTREAM_KAFKA_URL": f"{HOST}:{free_port()}",  # no broker: /ready is 503 anyway
    }
    with log.open("ab") as out:
        api = subprocess.Popen(
            [XPSTREAM, "api", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def reads(client: httpx.Client) -> list[httpx.Response]:
        return [
            client.get("/v1/assignments?user_id=u-1", headers=sdk),
            client.post("/v1/flags/evaluate", json={"user_id": "u-1"}, headers=sdk),
            client.get(f"/api/features/{keys['client']}"),
        ]

    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.2)
            before = [r.json() for r in reads(client)]
            assert all(before)
            assert client.get("/v1/flags", headers=developer).status_code == 200  # a key seen
            lines_before = len(log.read_text().splitlines())
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
            lines = log.read_text().splitlines()[lines_before:]
            assert answered > 20 and len(lines) <= 5, lines  # not a line per request
            assert not any("Traceback" in line for line in lines), lines

            cluster.resume()
            deadline = time.monotonic() + 20
            while client.get("/ready").json()["database"] != "ok":
                assert time.monotonic() < deadline, "the API did not see the database return"
                time.sleep(0.2)
            created = client.post("/v1/experiments", json=experiment, headers=developer)
            assert created.status_code == 201, created.text
            assert client.get("/v1/flags", headers=auth(keys["viewer"])).status_code == 200
    finally:
        api.terminate()
        api.wait(timeout=30)
    with engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM experiments WHERE key = 'late'")
        assert conn.execute(query).scalar_one() == 1
    engine.dispose()
