"""Catalog edits under concurrency, over real HTTP (uvicorn) on SQLite and on PostgreSQL 15:
``If-Match`` makes one of two edits based on the same version win and the other fail with 412
and change nothing; edits of different entities never lose each other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from api.app import create_app
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import AuditRow
from sinks.sql.store import load_catalog, make_engine, save_catalog
from tests.api.conftest import CATALOG, auth, live_server

ROUNDS = 20


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/edits.db"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture()
def api(database: str) -> Iterator[tuple[str, Engine, dict[str, str]]]:
    """A real server on a free loopback port, with the test catalog and a developer key."""
    upgrade_to_head(database)
    engine = make_engine(database)
    drafts = [{**e, "status": "draft"} for e in CATALOG["experiments"]]  # any coverage edit
    save_catalog(engine, parse_catalog({**CATALOG, "experiments": drafts}))
    headers = auth(create_api_key(engine, "developer", "edits"))
    settings = Settings(database_url=database, namespace="edits", partitions=4)
    with live_server(create_app(settings, engine, f"{HOST}:{free_port()}")) as url:
        yield url, engine, headers
    engine.dispose()


def audit_rows(engine: Engine, key: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(AuditRow).where(AuditRow.entity_key == key)
        return int(conn.execute(query).scalar_one())


def together(*calls: Any) -> list[httpx.Response]:
    """Run the calls at the same moment, each on its own thread and connection."""
    barrier = threading.Barrier(len(calls))

    def run(call: Any) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            response: httpx.Response = call(client)
            return response

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_same_if_match_one_wins_the_other_gets_412(
    api: tuple[str, Engine, dict[str, str]],
) -> None:
    base, engine, headers = api
    for round_number in range(ROUNDS):
        current = httpx.get(f"{base}/v1/flags/banner", headers=headers)
        etag = current.headers["ETag"]
        assert current.json()["version"] == int(etag.strip('"'))
        before = audit_rows(engine, "banner")
        bodies = [{"default": round_number % 2 == 0}, {"default": round_number % 2 == 1}]
        responses = together(
            *(
                lambda client, body=body, etag=etag: client.put(
                    f"{base}/v1/flags/banner", json=body, headers={**headers, "If-Match": etag}
                )
                for body in bodies
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 412], [r.text for r in responses]
        winner = next(body for body, r in zip(bodies, responses, strict=True) if r.is_success)
        loser = next(r for r in responses if r.status_code == 412)
        assert "If-Match" in loser.json()["detail"]
        stored = httpx.get(f"{base}/v1/flags/banner", headers=headers).json()
        assert stored["default"] is winner["default"]
        assert audit_rows(engine, "banner") == before + 1


def test_stale_if_match_changes_nothing(api: tuple[str, Engine, dict[str, str]]) -> None:
    base, engine, headers = api
    first = httpx.get(f"{base}/v1/experiments/checkout", headers=headers)
    stale = first.headers["ETag"]
    done = httpx.put(
        f"{base}/v1/experiments/checkout",
        json={"coverage": 0.9},
        headers={**headers, "If-Match": stale},
    )
    assert done.status_code == 200 and done.headers["ETag"] != stale
    refused = httpx.put(
        f"{base}/v1/experiments/checkout",
        json={"coverage": 0.5},
        headers={**headers, "If-Match": stale},
    )
    assert refused.status_code == 412
    assert load_catalog(engine).experiment("checkout").coverage == 0.9


def test_edits_of_different_experiments_both_persist(
    api: tuple[str, Engine, dict[str, str]],
) -> None:
    base, engine, headers = api
    for round_number in range(ROUNDS):
        coverages = {"checkout": 0.5 + round_number / 100, "banner-test": 0.3 + round_number / 100}
        responses = together(
            *(
                lambda client, key=key, coverage=coverage: client.put(
                    f"{base}/v1/experiments/{key}", json={"coverage": coverage}, headers=headers
                )
                for key, coverage in coverages.items()
            )
        )
        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        catalog = load_catalog(engine)
        for key, coverage in coverages.items():
            assert catalog.experiment(key).coverage == pytest.approx(coverage), (round_number, key)
