"""A guardrail rollback made by the analyzer, in its own `xpstream run --only analyzer` process,
reaches a GrowthBook SDK subscribed to the API's stream, which then serves the flag's default,
within 2 s of the rollback's commit; the payload's dateUpdated moves with it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from growthbook import GrowthBook
from growthbook.growthbook import feature_repo
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.audit import rollback_flag
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import FlagRow
from sinks.sql.store import as_utc, make_engine, save_catalog
from stats.sufficient import STATISTICS
from tests.api.conftest import live_server
from tests.jobs.conftest import write_window_rows
from tests.pipeline.conftest import XPSTREAM

CATALOG: dict[str, Any] = {
    "metrics": [{"key": "errors", "kind": "count"}],
    "flags": [{"key": "banner", "default": False, "rules": [{"id": "test", "experiment": "b"}]}],
    "experiments": [
        {
            "key": "b",
            "flag": "banner",
            "coverage": 1.0,
            "control": "off",
            "variants": [
                {"key": "off", "weight": 0.5, "value": True},
                {"key": "on", "weight": 0.5, "value": True},
            ],
            "guardrails": [{"metric": "errors", "bad_direction": "increase", "min_users": 100}],
        }
    ],
}


def breaching_windows() -> list[dict[str, Any]]:
    """20,000 users per arm; 5% of control and 7% of treatment had an error (0/1 values): a
    +40% regression, well inside what the always-valid test (τ = 0.05) decides on at once."""
    rows = []
    for variant, errors in (("off", 1000.0), ("on", 1400.0)):
        stats = dict.fromkeys(STATISTICS, 0.0) | {"n": 20000.0, "sum": errors, "sum_sq": errors}
        rows.append(
            {
                "experiment": "b",
                "variant": variant,
                "metric": "errors",
                "window_start": 1_764_000_000,
                "partition": 0,
                "source_offset": 1,
                **stats,
            }
        )
    return rows


@pytest.fixture(autouse=True)
def fresh_sdk_stream() -> Iterator[None]:
    """The growthbook SDK keeps one stream client per process (its module-level feature
    repository) and reuses it for any later instance, even against another server: each test
    starts without it."""
    feature_repo.sse_client = None
    yield
    feature_repo.sse_client = None


def wait_for_subscribers(app: FastAPI, count: int) -> None:
    """Until ``count`` streams are open on the server (an SDK connects in the background)."""
    deadline = time.monotonic() + 30
    while getattr(app.state, "watch", None) is None or app.state.watch.subscribers < count:
        assert time.monotonic() < deadline, "the streams never opened"
        time.sleep(0.01)


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[tuple[str, str, Engine, FastAPI]]:
    database = f"sqlite:///{tmp_path}/stream.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, parse_catalog(CATALOG))
    client_key = create_api_key(engine, "client", "web")
    settings = Settings(database_url=database, namespace="stream", partitions=1)
    app = create_app(settings, engine, f"{HOST}:{free_port()}")
    with live_server(app) as url:
        yield url, client_key, engine, app
    engine.dispose()


def test_an_analyzer_rollback_reaches_a_streaming_sdk_within_2_seconds(
    api: tuple[str, str, Engine, FastAPI], tmp_path: Path
) -> None:
    url, client_key, engine, app = api
    growthbook = GrowthBook(
        api_host=url, client_key=client_key, streaming=True, attributes={"id": "u-1"}
    )
    growthbook.load_features()
    wait_for_subscribers(app, 1)
    assert growthbook.get_feature_value("banner", None) is True  # in the experiment
    before = httpx.get(f"{url}/api/features/{client_key}").json()["dateUpdated"]
    write_window_rows(engine, breaching_windows())
    env = {
        **os.environ,
        "XPSTREAM_DATABASE_URL": str(engine.url),
        "XPSTREAM_ANALYSIS_INTERVAL_SECONDS": "0.5",
        "XPSTREAM_NAMESPACE": "stream",
    }
    env.pop("XPSTREAM_KAFKA_URL", None)  # the embedded broker, for the alert publisher
    analyzer = subprocess.Popen(
        [XPSTREAM, "run", "--only", "analyzer"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while growthbook.get_feature_value("banner", None) is not False:
            assert time.monotonic() < deadline, "the SDK never served the default"
            assert analyzer.poll() is None, "the analyzer exited"
            time.sleep(0.01)
        served_at = datetime.now(UTC)
    finally:
        analyzer.terminate()
        analyzer.wait(30)
        growthbook.destroy()
    with Session(engine) as session:
        rolled_back_at = session.get_one(FlagRow, "banner").rolled_back_at
    assert rolled_back_at is not None
    delay = (served_at - as_utc(rolled_back_at)).total_seconds()
    print(f"\nrollback committed → SDK serves the default: {delay:.2f} s")
    assert delay < 2.0
    after = httpx.get(f"{url}/api/features/{client_key}").json()
    assert after["dateUpdated"] > before and after["features"]["banner"]["rules"] == []


def test_subscribers_that_never_read_hold_up_nobody(
    api: tuple[str, str, Engine, FastAPI],
) -> None:
    """Fifty connections open the stream and never read a byte; an SDK subscribed beside them
    still sees a rollback (made straight in the database, as another process would) at once."""
    url, client_key, engine, app = api
    host, port = url.removeprefix("http://").split(":")
    idle = []
    for _ in range(50):
        conn = socket.create_connection((host, int(port)), timeout=10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.sendall(f"GET /sub/{client_key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        idle.append(conn)
    growthbook = GrowthBook(
        api_host=url, client_key=client_key, streaming=True, attributes={"id": "u-1"}
    )
    try:
        assert growthbook.get_feature_value("banner", None) is True
        wait_for_subscribers(app, 51)
        with Session(engine) as session, session.begin():
            rollback_flag(session, "banner", reason="test", actor="test", at=datetime.now(UTC))
        changed_at = time.monotonic()
        while growthbook.get_feature_value("banner", None) is not False:
            assert time.monotonic() - changed_at < 2.0, "the SDK waited behind idle subscribers"
            time.sleep(0.01)
    finally:
        growthbook.destroy()
        for conn in idle:
            conn.close()
