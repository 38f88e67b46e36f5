"""Flags in the catalog and through the API: bad rules refused with their path, evaluation's
errors, the payload's keys, versions, encryption and CORS."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from growthbook.growthbook import decrypt
from sqlalchemy import Engine

from api.sdk_payload import new_encryption_key
from config.catalog import CatalogError, parse_catalog
from sinks.sql.keys import create_api_key
from tests.api.conftest import CATALOG, auth

EXPERIMENT = {
    "key": "e",
    "control": "a",
    "variants": [{"key": "a", "weight": 0.5, "value": "x"}, {"key": "b", "weight": 0.5}],
}


def catalog_with(flag: dict[str, Any], experiments: list[dict[str, Any]] | None = None) -> Any:
    return {"flags": [flag], "experiments": experiments or [], "saved_groups": {"g": ["1"]}}


def when(condition: dict[str, Any]) -> dict[str, Any]:
    return {"key": "f", "rules": [{"id": "r", "value": True, "condition": condition}]}


RULE = "flags.0.rules.0"
ALWAYS = {"id": "r", "value": True}


@pytest.mark.parametrize(
    ("flag", "path"),
    [
        (when({"a": {"$inn": [1]}}), f"{RULE}.condition.a.$inn"),
        (when({"$where": "x"}), f"{RULE}.condition.$where"),
        (when({"a": {"$in": "DE"}}), f"{RULE}.condition.a.$in"),
        (when({"a": {"$regex": "("}}), f"{RULE}.condition.a.$regex"),
        (when({"a": {"$exists": 1}}), f"{RULE}.condition.a.$exists"),
        (when({"a": {"$vgt": 2}}), f"{RULE}.condition.a.$vgt"),
        (when({"$or": {"a": 1}}), f"{RULE}.condition.$or"),
        (when({"id": {"$inGroup": "nope"}}), f"{RULE}.condition.id.$inGroup"),
        (when({"a": {"$type": "date"}}), f"{RULE}.condition.a.$type"),
        ({"key": "f", "rules": [{"id": "r", "value": "yes"}]}, f"{RULE}.value"),
        ({"key": "f", "type": "number", "default": "1"}, "flags.0.default"),
        (
            {"key": "f", "rules": [{"id": "r", "value": 1}, {"id": "r", "value": 0}]},
            "flags.0.rules",
        ),
        ({"key": "f", "rules": [{"id": "r", "experiment": "nope"}]}, f"{RULE}.experiment"),
        (
            {
                "key": "f",
                "type": "string",
                "default": "",
                "rules": [{"id": "r", "experiment": "e"}],
            },
            "variants.1.value",
        ),
        ({"key": "f", "rules": [{"id": "r", "value": True, "rollout": 1.5}]}, "rollout"),
    ],
)
def test_bad_rules_refuse_the_catalog_naming_the_path(flag: dict[str, Any], path: str) -> None:
    with pytest.raises(CatalogError) as refused:
        parse_catalog(catalog_with(flag, [EXPERIMENT]))
    assert path in str(refused.value)


def test_a_catalog_of_the_older_form_still_loads() -> None:
    catalog = parse_catalog({"flags": [{"key": "old", "enabled": True, "rollout": 1.0}]})
    [flag] = catalog.flags
    assert (flag.type, flag.default, flag.rules) == ("boolean", True, ())


def test_an_experiment_without_a_flag_may_not_take_a_flag_key() -> None:
    with pytest.raises(CatalogError, match=r"experiments\.0\.key"):
        parse_catalog(catalog_with({"key": "e"}, [EXPERIMENT]))


def test_evaluate_refuses_bad_input_naming_the_field(
    client: TestClient, keys: dict[str, str]
) -> None:
    sdk = auth(keys["sdk"])
    bad = client.post("/v1/flags/evaluate", json={"user_id": "u", "attributes": [1]}, headers=sdk)
    assert bad.status_code == 422 and "attributes" in bad.text
    unknown = client.post(
        "/v1/flags/evaluate", json={"user_id": "u", "flags": ["nope"]}, headers=sdk
    )
    assert unknown.status_code == 404 and "nope" in unknown.text
    viewer = client.post("/v1/flags/evaluate", json={"user_id": "u"}, headers=auth(keys["viewer"]))
    assert viewer.status_code == 403


def test_the_payload_needs_a_client_key_and_follows_every_change(
    client: TestClient, keys: dict[str, str]
) -> None:
    assert client.get("/api/features/nope").status_code == 401
    assert client.get(f"/api/features/{keys['sdk']}").status_code == 401  # not a client key
    url = f"/api/features/{keys['client']}"
    first = client.get(url)
    assert first.status_code == 200
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    assert first.headers["x-sse-support"] == "enabled"
    body = first.json()
    assert body["status"] == 200 and set(body["features"]) >= {"new-checkout", "banner"}
    assert client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    admin = auth(keys["admin"])
    client.post("/v1/flags/banner/rollback", json={"reason": "test"}, headers=admin)
    after = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != first.headers["ETag"]
    assert after.json()["dateUpdated"] > body["dateUpdated"]
    assert after.json()["features"]["banner"]["rules"] == []


def test_an_encrypted_payload_is_what_the_sdk_decrypts(client: TestClient, engine: Engine) -> None:
    secret = new_encryption_key()
    token = create_api_key(engine, "client", "web", payload_key=secret)
    body = client.get(f"/api/features/{token}").json()
    assert "features" not in body
    features = json.loads(decrypt(body["encryptedFeatures"], secret))  # the SDK's own
    assert set(features) >= {f["key"] for f in CATALOG["flags"]}
    assert json.loads(decrypt(body["encryptedSavedGroups"], secret)) == {}
