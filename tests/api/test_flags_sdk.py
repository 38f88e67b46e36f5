"""Flags evaluated by the server agree with GrowthBook's own SDKs, unmodified: the `growthbook`
package from PyPI and `@growthbook/growthbook` from npm (run by node) load the payload from a
running API and evaluate every flag and experiment of a catalog that uses every operator, for
10,000 users with varied attributes; values equal `/v1/flags/evaluate`, experiments equal
`/v1/assignments`."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from growthbook import GrowthBook
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.audit import rollback_flag
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog
from tests.api.conftest import auth, live_server
from tests.services.growthbook_js import evaluate_in_node

USERS = 10_000
VARIANTS = [
    {"key": "off", "weight": 0.5, "value": False},
    {"key": "on", "weight": 0.5, "value": True},
]
CATALOG: dict[str, Any] = {
    "metrics": [{"key": "revenue", "kind": "sum"}],
    "saved_groups": {"testers": ["u-1", "u-2", "u-30", "ü-7"], "blocked": ["KP", "IR"]},
    "flags": [
        {
            "key": "checkout",
            "type": "boolean",
            "default": False,
            "rules": [
                {
                    "id": "staff",
                    "condition": {"email": {"$regex": "@example\\.com$"}},
                    "value": True,
                },
                {
                    "id": "eu",
                    "condition": {"country": {"$in": ["DE", "FR"]}},
                    "value": True,
                    "rollout": 0.25,
                },
                {"id": "test", "experiment": "checkout-test"},
            ],
        },
        {
            "key": "theme",
            "type": "string",
            "default": "light",
            "rules": [
                {
                    "id": "beta",
                    "condition": {"app": {"$vgte": "2.3.0", "$vlt": "3.0.0"}},
                    "value": "dark",
                },
                {
                    "id": "vip",
                    "condition": {"$or": [{"plan": "vip"}, {"account.tier": {"$gte": 3}}]},
                    "value": "gold",
                },
                {"id": "none", "value": "never", "rollout": 0},
                {"id": "all-by-team", "value": "team", "rollout": 1, "hash_attribute": "team"},
            ],
        },
        {
            "key": "limit",
            "type": "number",
            "default": 10,
            "rules": [
                {
                    "id": "tagged",
                    "condition": {"tags": {"$elemMatch": {"$eq": "beta"}}},
                    "value": 20,
                },
                {"id": "many", "condition": {"tags": {"$size": {"$gt": 2}}}, "value": 30},
                {"id": "all", "condition": {"tags": {"$all": ["a", "b"]}}, "value": 40},
                {"id": "alli", "condition": {"tags": {"$alli": ["X", "Y"]}}, "value": 41},
                {
                    "id": "typed",
                    "condition": {"age": {"$type": "number"}, "name": {"$exists": True}},
                    "value": 50,
                },
                {
                    "id": "young",
                    "condition": {"$not": {"age": {"$lt": 30}}, "age": {"$exists": True}},
                    "value": 60,
                },
                {
                    "id": "nor",
                    "condition": {"$nor": [{"country": "US"}, {"country": "CA"}]},
                    "value": 70.5,
                    "rollout": 0.5,
                },
            ],
        },
        {
            "key": "config",
            "type": "json",
            "default": {"a": 1},
            "rules": [
                {"id": "group", "condition": {"id": {"$inGroup": "testers"}}, "value": {"a": 2}},
                {
                    "id": "not-blocked",
                    "condition": {
                        "country": {"$notInGroup": "blocked"},
                        "browser": {"$regexi": "^fire"},
                    },
                    "value": {"a": 3},
                },
                {
                    "id": "paying",
                    "condition": {"plan": {"$ne": "free"}, "score": {"$lte": 0.5}},
                    "value": [1, 2],
                },
                {
                    "id": "versions",
                    "condition": {
                        "$and": [
                            {"app": {"$vne": "1.0.0"}},
                            {"app": {"$vgt": "1.0.0"}},
                            {"app": {"$vlte": "2.0.0"}},
                        ]
                    },
                    "value": {"v": 2},
                },
                {"id": "exact", "condition": {"app": {"$veq": "1.0.0"}}, "value": {"v": 1}},
                {
                    "id": "langs",
                    "condition": {
                        "country": {"$nin": ["DE"]},
                        "lang": {"$ini": ["EN"]},
                        "region": {"$nini": ["x"]},
                    },
                    "value": "en",
                    "rollout": 1.0,
                },
                {
                    "id": "ios",
                    "condition": {
                        "device.os": {"$eq": "ios"},
                        "score": {"$gt": 0.9},
                        "tags": {"$size": 0},
                    },
                    "value": {"ios": True},
                },
                {
                    "id": "banner",
                    "experiment": "banner-values",
                    "condition": {"score": {"$lt": 0.3}},
                },
            ],
        },
        {"key": "gone", "default": True, "rules": [{"id": "r", "value": False}]},
        {
            "key": "off-flag",
            "enabled": False,
            "type": "string",
            "default": "x",
            "rules": [{"id": "r", "value": "y"}],
        },
    ],
    "experiments": [
        {
            "key": "checkout-test",
            "flag": "checkout",
            "coverage": 0.8,
            "control": "off",
            "variants": VARIANTS,
            "metrics": ["revenue"],
        },
        {
            "key": "banner-values",
            "flag": "config",
            "hash_version": 1,
            "control": "a",
            "variants": [
                {"key": "a", "weight": 0.34, "value": {"b": "a"}},
                {"key": "b", "weight": 0.33, "value": {"b": "b"}},
                {"key": "c", "weight": 0.33, "value": {"b": "c"}},
            ],
        },
        {
            "key": "layout-test",
            "seed": "layout-seed",
            "coverage": 0.5,
            "control": "grid",
            "variants": [{"key": "grid", "weight": 0.2}, {"key": "list", "weight": 0.8}],
        },
        {
            "key": "old-test",
            "status": "stopped",
            "control": "a",
            "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        },
    ],
}
FEATURES = ["checkout", "theme", "limit", "config", "gone", "off-flag", "layout-test"]


def user_attributes(rng: random.Random, number: int) -> dict[str, Any]:
    """Varied attributes: numbers, strings, versions, arrays, nested objects, missing ones,
    non-ASCII and non-BMP ids."""
    ids = [f"u-{number}", f"ü-{number}", f"用户{number}", f"🙂{number}", str(number)]
    attributes: dict[str, Any] = {"id": rng.choice(ids)}
    optional: dict[str, Any] = {
        "email": rng.choice(["a@example.com", "b@example.org", "c@EXAMPLE.com"]),
        "country": rng.choice(["DE", "FR", "US", "CA", "KP", "BR"]),
        "app": rng.choice(["1.0.0", "1.5.2", "2.0.0", "2.3.0", "2.10.1", "3.0.0", "v2.4-beta"]),
        "plan": rng.choice(["free", "pro", "vip"]),
        "account": {"tier": rng.randrange(6)},
        "tags": rng.sample(["a", "b", "beta", "X", "y", "x"], rng.randrange(5)),
        "age": rng.choice([17, 29.5, 30, 64, "40"]),
        "name": "n",
        "score": rng.random(),
        "browser": rng.choice(["Firefox", "firefox mobile", "Chrome"]),
        "lang": rng.choice(["en", "EN", "de"]),
        "region": rng.choice(["X", "y"]),
        "device": {"os": rng.choice(["ios", "android"])},
        "team": rng.choice(["red", 7, 2.5]),
    }
    for name, value in optional.items():
        if rng.random() < 0.8:
            attributes[name] = value
    return attributes


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine, dict[str, str]]]:
    path = tmp_path_factory.mktemp("flags")
    database = f"sqlite:///{path}/flags.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, parse_catalog(CATALOG))
    with Session(engine) as session, session.begin():
        rollback_flag(session, "gone", reason="test", actor="test", at=datetime.now(UTC))
    keys = {role: create_api_key(engine, role, role) for role in ("client", "sdk")}
    settings = Settings(database_url=database, namespace="flags", partitions=4)
    with live_server(create_app(settings, engine, f"{HOST}:{free_port()}")) as url:
        yield url, engine, keys
    engine.dispose()


def server_answers(
    url: str, sdk_key: str, users: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Flag values from /v1/flags/evaluate/batch and layout-test from /v1/assignments/batch."""
    values: list[dict[str, Any]] = []
    layout: list[dict[str, str]] = []
    with httpx.Client(base_url=url, headers=auth(sdk_key), timeout=60) as client:
        for start in range(0, len(users), 1000):
            chunk = users[start : start + 1000]
            items = [
                {"user_id": u["id"], "attributes": {k: v for k, v in u.items() if k != "id"}}
                for u in chunk
            ]
            answer = client.post("/v1/flags/evaluate/batch", json={"items": items})
            assert answer.status_code == 200, answer.text
            values += [r["flags"] for r in answer.json()["results"]]
            assigned = client.post(
                "/v1/assignments/batch",
                json={"user_ids": [u["id"] for u in chunk], "experiment": "layout-test"},
            )
            layout += [a["assignments"][0] for a in assigned.json()["assignments"]]
    return values, layout


def expected(values: dict[str, Any], layout: dict[str, Any], key: str) -> tuple[Any, Any]:
    if key == "layout-test":
        variant = layout["variant"] if layout["in_experiment"] else None
        return layout["variant"], variant
    flag = values[key]
    return flag["value"], flag["variant"] if flag["in_experiment"] else None


def test_python_and_javascript_sdks_agree_with_the_server(
    api: tuple[str, Engine, dict[str, str]], tmp_path: Path
) -> None:
    url, _engine, keys = api
    rng = random.Random(17)
    users = [user_attributes(rng, number) for number in range(USERS)]
    values, layout = server_answers(url, keys["sdk"], users)

    growthbook = GrowthBook(api_host=url, client_key=keys["client"])
    growthbook.load_features()
    in_node = evaluate_in_node(f"{url}/api/features/{keys['client']}", users, FEATURES, tmp_path)
    sources: set[str] = set()
    for index, attributes in enumerate(users):
        growthbook.set_attributes(attributes)
        for key in FEATURES:
            want = expected(values[index], layout[index], key)
            result = growthbook.eval_feature(key)
            in_python = result.experimentResult
            python_variant = in_python.key if in_python and in_python.inExperiment else None
            assert (result.value, python_variant) == want, ("python", key, attributes)
            node = in_node[index][key]
            assert (node["value"], node["variant"]) == want, ("javascript", key, attributes)
        sources |= {flag["source"] for flag in values[index].values()}
    # The catalog exercised every way a value is chosen.
    assert sources == {"rule", "rollout", "experiment", "default", "disabled", "rolled_back"}
    growthbook.destroy()
