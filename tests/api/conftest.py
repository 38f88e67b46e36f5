"""API tests: the real FastAPI app over ASGI (httpx), a fresh SQLite database with a catalog,
and one key per role created the way `xpstream keys create` creates them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.keys import ROLES, create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog

CATALOG: dict[str, Any] = {
    "metrics": [
        {"key": "revenue", "kind": "sum"},
        {"key": "purchase", "kind": "conversion"},
        {"key": "errors", "kind": "count", "higher_is_better": False},
    ],
    "flags": [{"key": "new-checkout"}, {"key": "banner"}],
    "experiments": [
        {
            "key": "checkout",
            "flag": "new-checkout",
            "control": "control",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": ["revenue", "purchase"],
        },
        {
            "key": "banner-test",
            "flag": "banner",
            "coverage": 0.5,
            "hash_version": 1,
            "control": "off",
            "variants": [{"key": "off", "weight": 0.5}, {"key": "on", "weight": 0.5}],
            "metrics": ["purchase"],
            "guardrails": [{"metric": "errors", "bad_direction": "increase"}],
        },
    ],
}


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(engine, parse_catalog(CATALOG))
    yield engine
    engine.dispose()


@pytest.fixture()
def keys(engine: Engine) -> dict[str, str]:
    return {role: create_api_key(engine, role, f"test {role}") for role in ROLES}


def make_client(engine: Engine, bootstrap: str, namespace: str = "api") -> TestClient:
    settings = Settings(database_url=str(engine.url), namespace=namespace, partitions=4)
    return TestClient(create_app(settings, engine, bootstrap), raise_server_exceptions=False)


@pytest.fixture()
def client(engine: Engine) -> Iterator[TestClient]:
    """No broker behind it: a closed port on loopback."""
    with make_client(engine, f"{HOST}:{free_port()}") as test_client:
        yield test_client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn, as `xpstream api` serves it, in a thread on a free loopback
    port: real HTTP for clients that need it (SDKs, concurrent requests)."""
    port = free_port()
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
