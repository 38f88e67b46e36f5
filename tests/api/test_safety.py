"""Safety settings and rollout moves over the API: default guardrails checked against the
catalog and applied to every experiment with a flag (a flag's own list instead, an experiment's
own guardrail winning on its metric), pause/resume of a schedule, and the safety report."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from config.catalog import Guardrail
from sinks.sql.store import load_catalog, load_effective_catalog
from tests.api.conftest import auth

ERRORS = {"metric": "errors", "bad_direction": "increase", "margin": 0.1, "min_users": 300}


def test_safety_settings_apply_to_every_experiment_with_a_flag(
    client: TestClient, keys: dict[str, str], engine: Engine
) -> None:
    admin, developer = auth(keys["admin"]), auth(keys["developer"])
    unknown = client.put(
        "/v1/safety/settings",
        json={"guardrails": [{**ERRORS, "metric": "latency"}], "flags": {"nope": []}},
        headers=admin,
    )
    assert unknown.status_code == 422
    assert "guardrails.0.metric: unknown metric 'latency'" in unknown.text
    assert "flags.nope: unknown flag 'nope'" in unknown.text
    refused = client.put("/v1/safety/settings", json={"guardrails": [ERRORS]}, headers=developer)
    assert refused.status_code == 403
    purchase_only = {"metric": "purchase", "bad_direction": "decrease"}
    settings = {"guardrails": [ERRORS], "flags": {"new-checkout": [purchase_only]}}
    saved = client.put("/v1/safety/settings", json=settings, headers=admin)
    assert saved.status_code == 200, saved.text
    assert client.get("/v1/safety/settings", headers=developer).json() == saved.json()

    effective = {e.key: e.guardrails for e in load_effective_catalog(engine).experiments}
    # checkout (flag new-checkout): the flag's own list; banner-test: its own errors guardrail
    # wins over the default on the same metric
    assert effective["checkout"] == (Guardrail.model_validate(purchase_only),)
    own = {e.key: e.guardrails for e in load_catalog(engine).experiments}
    assert effective["banner-test"] == own["banner-test"]
    assert own["checkout"] == ()  # the stored catalog is what people wrote
    audit = client.get("/v1/audit", headers=developer).json()
    assert audit[0]["action"] == "safety.update" and audit[0]["after"] == saved.json()


def test_a_schedule_pauses_resumes_and_appears_in_the_safety_report(
    client: TestClient, keys: dict[str, str]
) -> None:
    developer = auth(keys["developer"])
    body = {
        "flag": "banner",
        "value": False,
        "stages": [{"percent": 10}, {"percent": 100}],
        "guardrails": [ERRORS],
    }
    created = client.post("/v1/rollout-schedules", json=body, headers=developer)
    assert created.status_code == 201, created.text
    rollout_id = created.json()["id"]
    paused = client.post(f"/v1/rollout-schedules/{rollout_id}/pause", headers=developer)
    assert paused.json()["state"] == "paused"
    again = client.post(f"/v1/rollout-schedules/{rollout_id}/pause", headers=developer)
    assert again.status_code == 409 and again.json()["detail"].startswith("pause_when_paused:")
    report = client.get("/v1/safety/report", headers=developer).json()
    assert [r["id"] for r in report["rollouts_in_progress"]] == [rollout_id]
    resumed = client.post(f"/v1/rollout-schedules/{rollout_id}/resume", headers=developer)
    assert resumed.json()["state"] == "running"
    back = client.post(
        f"/v1/rollout-schedules/{rollout_id}/rollback", json={"reason": "p99"}, headers=developer
    )
    assert back.json()["state"] == "rolled_back" and back.json()["reason"] == "p99"
    report = client.get("/v1/safety/report", headers=developer).json()
    assert report["rollouts_in_progress"] == []
    assert [r["id"] for r in report["rolled_back_rollouts"]] == [rollout_id]
    missing = client.post("/v1/rollout-schedules/999/advance", headers=developer)
    assert missing.status_code == 404
    unknown_flag = client.post(
        "/v1/rollout-schedules", json={**body, "flag": "x"}, headers=developer
    )
    assert unknown_flag.status_code == 422 and "unknown flag 'x'" in unknown_flag.text
