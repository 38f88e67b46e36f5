"""Every endpoint × every role: 401 without a valid key, 403 for a role without the permission,
2xx otherwise."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.auth import PERMISSIONS
from config.catalog import Experiment, Flag
from sinks.sql.keys import ROLES, create_api_key
from sinks.sql.store import bump_catalog_version, write_experiment, write_flag
from tests.api.conftest import auth

counter = itertools.count()


def new_experiment() -> dict[str, Any]:
    key = f"exp-{next(counter)}"
    return {
        "key": key,
        "control": "a",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        "metrics": ["revenue"],
    }


# (method, path, body or a function making one, permission)
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("GET", "/v1/assignments?user_id=u1", None, "assign"),
    ("POST", "/v1/assignments/batch", {"user_ids": ["u1", "u2"]}, "assign"),
    ("POST", "/v1/events", {"events": [{"type": "nonsense"}]}, "ingest"),
    ("GET", "/v1/experiments", None, "read"),
    ("GET", "/v1/experiments/checkout", None, "read"),
    ("GET", "/v1/experiments/checkout/report", None, "read"),
    ("GET", "/v1/alerts", None, "read"),
    ("GET", "/v1/flags", None, "read"),
    ("GET", "/v1/flags/banner", None, "read"),
    ("GET", "/v1/experiments/checkout/timeseries", None, "analyse"),
    ("GET", "/v1/audit", None, "analyse"),
    ("POST", "/v1/experiments", new_experiment, "write"),
    ("PUT", "/v1/experiments/checkout", lambda: CHECKOUT, "write"),
    ("POST", "/v1/experiments/{fresh}/stop", None, "write"),
    ("PUT", "/v1/experiments/{draft}/schedule", {}, "write"),
    ("POST", "/v1/rollout-schedules", "{rollout}", "write"),
    ("GET", "/v1/rollout-schedules", None, "read"),
    ("GET", "/v1/safety/settings", None, "read"),
    ("GET", "/v1/safety/report", None, "read"),
    ("PUT", "/v1/safety/settings", {"guardrails": []}, "admin"),
    ("POST", "/v1/flags", lambda: {"key": f"flag-{next(counter)}"}, "write"),
    ("PUT", "/v1/flags/banner", {"key": "banner", "enabled": True}, "write"),
    ("POST", "/v1/flags/banner/rollback", {"reason": "test"}, "admin"),
    ("POST", "/v1/flags/banner/restore", None, "admin"),
    ("POST", "/v1/keys", {"role": "viewer", "name": "made by admin"}, "admin"),
]
CHECKOUT = {
    "key": "checkout",
    "flag": "new-checkout",
    "control": "control",
    "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
    "metrics": ["revenue", "purchase"],
}


def rollout_of_a_new_flag(engine: Engine) -> dict[str, Any]:
    """A rollout schedule's body for a flag of its own (a flag rolls out one schedule at once)."""
    flag = Flag(key=f"flag-{next(counter)}")
    with Session(engine) as session, session.begin():
        bump_catalog_version(session)
        write_flag(session, flag)
    return {"flag": flag.key, "value": False, "stages": [{"percent": 5}, {"percent": 100}]}


def call(
    client: TestClient, method: str, path: str, body: Any, headers: dict[str, str], engine: Engine
) -> int:
    """``{fresh}`` in ``path`` is a new running experiment, ``{draft}`` a new draft: each call
    acts on one of its own, so that a move never finds its experiment already moved."""
    if "{" in path:
        experiment = Experiment(
            **new_experiment(), status="running" if "{fresh}" in path else "draft"
        )
        with Session(engine) as session, session.begin():
            bump_catalog_version(session)
            write_experiment(session, experiment)
        path = path.format(fresh=experiment.key, draft=experiment.key)
    payload = (
        rollout_of_a_new_flag(engine) if body == "{rollout}" else body() if callable(body) else body
    )
    return client.request(method, path, json=payload, headers=headers).status_code


@pytest.mark.parametrize(("method", "path", "body", "permission"), ENDPOINTS)
def test_endpoint_by_role(
    client: TestClient,
    engine: Engine,
    keys: dict[str, str],
    method: str,
    path: str,
    body: Any,
    permission: str,
) -> None:
    assert call(client, method, path, body, {}, engine) == 401
    assert call(client, method, path, body, auth("xps_nothere_secret"), engine) == 401
    assert call(client, method, path, body, auth(keys["viewer"] + "x"), engine) == 401
    for role in ROLES:
        status = call(client, method, path, body, auth(keys[role]), engine)
        if permission in PERMISSIONS[role]:
            assert 200 <= status < 300, (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)


def test_health_ready_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")  # no broker behind this client
    assert ready.status_code == 503 and ready.json()["database"] == "ok"
    assert ready.json()["broker"] != "ok"
    assert "xpstream_http_requests_total" in client.get("/metrics").text


def test_revoked_key_is_refused(client: TestClient, keys: dict[str, str]) -> None:
    made = client.post("/v1/keys", json={"role": "viewer"}, headers=auth(keys["admin"])).json()
    assert client.get("/v1/flags", headers=auth(made["token"])).status_code == 200
    gone = client.delete(f"/v1/keys/{made['key_id']}", headers=auth(keys["admin"]))
    assert gone.status_code == 204
    assert client.get("/v1/flags", headers=auth(made["token"])).status_code == 401


def test_revoking_a_key_by_role(client: TestClient, keys: dict[str, str], engine: Engine) -> None:
    for role in ROLES:
        victim = create_api_key(engine, "viewer", "to revoke").split("_")[1]
        path = f"/v1/keys/{victim}"
        assert client.delete(path).status_code == 401
        status = client.delete(path, headers=auth(keys[role])).status_code
        assert status == (204 if "admin" in PERMISSIONS[role] else 403), (role, status)
