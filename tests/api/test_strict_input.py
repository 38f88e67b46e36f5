"""Strict input: every body is JSON without NaN/Infinity literals, lone surrogates or NUL;
every string, list and number of the catalog and API schemas is bounded; a 422 names the field
and echoes at most a short excerpt of the input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import auth

GUARDRAIL = {"metric": "revenue", "bad_direction": "increase"}


def experiment(**changes: Any) -> dict[str, Any]:
    return {
        "key": "bounded",
        "control": "a",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        "metrics": ["revenue"],
        **changes,
    }


def post_raw(client: TestClient, path: str, text: str, key: str) -> Any:
    return client.post(
        path, content=text.encode(), headers={**auth(key), "Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e400", '"\\ud800"', '"a\\u0000b"']
)
def test_literals_json_should_not_hold_are_422_not_500(
    client: TestClient, keys: dict[str, str], literal: str
) -> None:
    text = (
        '{"events": [{"type": "metric", "event_id": "e", "ts": 1764000000, "user_id": '
        f'"u", "metric": "revenue", "value": {literal}}}]}}'
    )
    response = post_raw(client, "/v1/events", text, keys["sdk"])
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_nul_is_refused_with_its_path(client: TestClient, keys: dict[str, str]) -> None:
    body = '{"user_ids": ["ok", "bad\\u0000id"]}'
    response = post_raw(client, "/v1/assignments/batch", body, keys["sdk"])
    assert response.status_code == 422
    assert "body.user_ids.1" in str(response.json()["detail"])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"seed": "s" * 100_000}, "seed"),
        ({"seed": "x\u0000y"}, "seed"),
        ({"seed": "tab\there"}, "seed"),
        (
            {"variants": [{"key": f"v{i}", "weight": 1 / 10_000} for i in range(10_000)]},
            "variants",
        ),
        ({"variants": [{"key": "a", "weight": 0}, {"key": "b", "weight": 0}]}, "weights"),
        ({"variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]}, "weights"),
        (
            {
                "guardrails": [
                    {"metric": "revenue", "bad_direction": "increase", "min_users": 2**63}
                ]
            },
            "min_users",
        ),
        ({"metrics": ["revenue"] * 101}, "metrics"),
        ({"flag": "x" * 1000}, "flag"),
    ],
)
def test_catalog_fields_are_bounded(
    client: TestClient, keys: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    response = client.post(
        "/v1/experiments", json=experiment(**changes), headers=auth(keys["developer"])
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    assert len(response.content) < 4096  # never the whole input back


def test_a_lone_surrogate_in_a_seed_is_422(client: TestClient, keys: dict[str, str]) -> None:
    text = (
        '{"key": "s1", "seed": "\\ud800", "control": "a", "variants": '
        '[{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]}'
    )
    assert post_raw(client, "/v1/experiments", text, keys["developer"]).status_code == 422


def test_batch_experiment_is_bounded(client: TestClient, keys: dict[str, str]) -> None:
    response = client.post(
        "/v1/assignments/batch",
        json={"user_ids": ["u"], "experiment": "e" * 10_000},
        headers=auth(keys["sdk"]),
    )
    assert response.status_code == 422 and "experiment" in response.text
    assert len(response.content) < 1024


def test_a_422_echoes_an_excerpt_only(client: TestClient, keys: dict[str, str]) -> None:
    response = client.post(
        "/v1/assignments/batch",
        json={"user_ids": "x" * 900_000},
        headers=auth(keys["sdk"]),
    )
    assert response.status_code == 422
    assert len(response.content) < 1024 and "user_ids" in response.text


def test_an_oversized_chunked_body_is_413(client: TestClient, keys: dict[str, str]) -> None:
    def chunks() -> Any:
        yield b'{"events": ["'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"]}'

    response = client.post(
        "/v1/events",
        content=chunks(),
        headers={**auth(keys["sdk"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
