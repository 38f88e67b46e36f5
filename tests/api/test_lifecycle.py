"""The experiment lifecycle over the API: each allowed move recorded and audited, every forbidden
move or edit answered 409 naming its rule with nothing changed, and a paused experiment serving
control (reason ``paused``) with its rule gone from the SDK payload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from sinks.sql.models import AuditRow
from tests.api.conftest import auth

DRAFT = {
    "key": "pricing",
    "flag": "banner",
    "status": "draft",
    "control": "off",
    "variants": [
        {"key": "off", "weight": 0.5, "value": False},
        {"key": "on", "weight": 0.5, "value": True},
    ],
    "metrics": ["purchase"],
}


def audit_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AuditRow)).scalar_one())


@pytest.fixture()
def developer(client: TestClient, keys: dict[str, str]) -> dict[str, str]:
    headers = auth(keys["developer"])
    banner = {"key": "banner", "rules": [{"id": "exp", "experiment": "pricing"}]}
    assert client.post("/v1/experiments", json=DRAFT, headers=headers).status_code == 201
    assert client.put("/v1/flags/banner", json=banner, headers=headers).status_code == 200
    return headers


def test_the_walk_of_an_experiment(
    client: TestClient, developer: dict[str, str], keys: dict[str, str]
) -> None:
    def move(action: str) -> dict[str, Any]:
        response = client.post(f"/v1/experiments/pricing/{action}", headers=developer)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def served(user: str) -> dict[str, Any]:
        response = client.get(
            f"/v1/assignments?user_id={user}&experiment=pricing", headers=auth(keys["sdk"])
        )
        assert response.status_code == 200, response.text
        return next(a for a in response.json()["assignments"] if a["experiment"] == "pricing")

    def payload_rules() -> list[dict[str, Any]]:
        client_key = keys["client"]
        response = client.get(f"/api/features/{client_key}")
        assert response.status_code == 200, response.text
        return list(response.json()["features"]["banner"]["rules"])

    assert served("u1")["reason"] == "not_running" and payload_rules() == []
    before = datetime.now(UTC)
    started = move("start")
    assert started["status"] == "running"
    assert before <= datetime.fromisoformat(started["started_at"]) <= datetime.now(UTC)
    assert [r["key"] for r in payload_rules()] == ["pricing"]
    assert any(served(f"u{i}")["in_experiment"] for i in range(20))

    assert move("pause")["status"] == "paused"
    paused = [served(f"u{i}") for i in range(20)]
    assert {(a["variant"], a["reason"], a["in_experiment"]) for a in paused} == {
        ("off", "paused", False)
    }
    assert payload_rules() == []
    report = client.get("/v1/experiments/pricing/report", headers=developer).json()
    assert report["status"] == "paused" and report["started_at"] is not None

    assert move("resume")["status"] == "running"
    stopped = move("stop")
    assert stopped["status"] == "stopped" and stopped["stopped_at"] >= stopped["started_at"]
    with client as c:
        rows = c.get("/v1/audit", headers=developer).json()
    actions = [r["action"] for r in rows if r["entity_key"] == "pricing"]
    assert actions[:4] == [
        "experiment.stop",
        "experiment.resume",
        "experiment.pause",
        "experiment.start",
    ]


FORBIDDEN = [
    # (moves before, the refused call, the rule its 409 names)
    ([], ("POST", "pause", None), "pause_from_draft"),
    ([], ("POST", "resume", None), "resume_from_draft"),
    ([], ("POST", "stop", None), "stop_from_draft"),
    (["start"], ("POST", "start", None), "start_from_running"),
    (["start"], ("POST", "resume", None), "resume_from_running"),
    (["start"], ("SCHEDULE", None, "later"), "schedule_when_running"),
    (["start", "pause"], ("POST", "pause", None), "pause_from_paused"),
    (["start", "stop"], ("POST", "start", None), "start_from_stopped"),
    (["start", "stop"], ("POST", "resume", None), "resume_from_stopped"),
    (["start", "stop"], ("SCHEDULE", None, "later"), "schedule_when_stopped"),
    ([], ("SCHEDULE", None, "past"), "schedule_in_the_past"),
    (
        ["start"],
        (
            "PUT",
            None,
            {
                "variants": [
                    {"key": "off", "weight": 0.4, "value": False},
                    {"key": "on", "weight": 0.6, "value": True},
                ]
            },
        ),
        "variants_fixed_once_started",
    ),
    (["start", "pause"], ("PUT", None, {"seed": "other"}), "seed_fixed_once_started"),
    (["start"], ("PUT", None, {"hash_version": 1}), "hash_version_fixed_once_started"),
    (["start"], ("PUT", None, {"control": "on"}), "control_fixed_once_started"),
    (["start"], ("PUT", None, {"coverage": 0.5}), "coverage_only_grows"),
]


@pytest.mark.parametrize(("moves", "call", "rule"), FORBIDDEN)
def test_forbidden_moves_answer_409_naming_the_rule_and_change_nothing(
    client: TestClient,
    developer: dict[str, str],
    engine: Engine,
    moves: list[str],
    call: tuple[str, Any, Any],
    rule: str,
) -> None:
    for action in moves:
        response = client.post(f"/v1/experiments/pricing/{action}", headers=developer)
        assert response.status_code == 200
    before = client.get("/v1/experiments/pricing", headers=developer).json()
    audited = audit_count(engine)
    kind, action, body = call
    if kind == "POST":
        response = client.post(f"/v1/experiments/pricing/{action}", headers=developer)
    elif kind == "PUT":
        response = client.put("/v1/experiments/pricing", json=body, headers=developer)
    else:
        moment = datetime.now(UTC) + timedelta(hours=1 if body == "later" else -1)
        response = client.put(
            "/v1/experiments/pricing/schedule",
            json={"start_at": moment.isoformat()},
            headers=developer,
        )
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith(f"{rule}:"), response.text
    assert client.get("/v1/experiments/pricing", headers=developer).json() == before
    assert audit_count(engine) == audited


def test_allowed_edits_of_a_running_experiment(
    client: TestClient, developer: dict[str, str]
) -> None:
    assert client.post("/v1/experiments/pricing/start", headers=developer).status_code == 200
    grown = client.put("/v1/experiments/pricing", json={"coverage": 1.0}, headers=developer)
    assert grown.status_code == 200, grown.text
    metrics = client.put(
        "/v1/experiments/pricing", json={"metrics": ["purchase", "revenue"]}, headers=developer
    )
    assert metrics.status_code == 200 and metrics.json()["metrics"] == ["purchase", "revenue"]
    status = client.put("/v1/experiments/pricing", json={"status": "stopped"}, headers=developer)
    assert status.status_code == 422 and "status" in status.text


def test_a_schedule_makes_a_draft_scheduled_and_clearing_it_a_draft_again(
    client: TestClient, developer: dict[str, str]
) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    body = {"start_at": start.isoformat(), "end_at": (start + timedelta(days=7)).isoformat()}
    scheduled = client.put("/v1/experiments/pricing/schedule", json=body, headers=developer)
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["status"] == "scheduled"
    assert datetime.fromisoformat(scheduled.json()["start_at"]) == start
    order = client.put(
        "/v1/experiments/pricing/schedule",
        json={"start_at": body["end_at"], "end_at": body["start_at"]},
        headers=developer,
    )
    assert order.status_code == 409 and order.json()["detail"].startswith("schedule_order:")
    naive = client.put(
        "/v1/experiments/pricing/schedule",
        json={"start_at": "2030-01-01T00:00:00"},
        headers=developer,
    )
    assert naive.status_code == 422 and "start_at" in naive.text
    cleared = client.put("/v1/experiments/pricing/schedule", json={}, headers=developer)
    assert cleared.json()["status"] == "draft" and cleared.json()["start_at"] is None


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "1969-07-20T20:17:00Z"]
)
def test_times_out_of_range_are_refused_naming_the_field(
    client: TestClient, developer: dict[str, str], moment: str
) -> None:
    scheduled = client.put(
        "/v1/experiments/pricing/schedule", json={"end_at": moment}, headers=developer
    )
    assert scheduled.status_code == 422 and "end_at" in scheduled.text, scheduled.text
    created = client.post(
        "/v1/experiments", json={**DRAFT, "key": "other", "start_at": moment}, headers=developer
    )
    assert created.status_code == 422 and "start_at" in created.text, created.text
