"""The API's operational defences: failed-authentication throttling, audited and immediate key
revocation, security headers, /metrics access, and what a developer may do to a flag."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from api.auth import FAILURES_ALLOWED
from pipelines.embedded_broker import HOST, free_port
from tests.api.conftest import auth, make_client

BAD = "xps_000000000000_" + "A" * 43  # well-formed, but no such key


def test_repeated_failures_from_one_address_get_429_and_valid_keys_still_work(
    client: TestClient, keys: dict[str, str]
) -> None:
    statuses = [
        client.get("/v1/experiments", headers=auth(BAD)).status_code
        for _ in range(FAILURES_ALLOWED + 5)
    ]
    assert statuses[:FAILURES_ALLOWED] == [401] * FAILURES_ALLOWED
    assert set(statuses[FAILURES_ALLOWED:]) == {429}
    throttled = client.get("/v1/experiments", headers=auth("garbage"))
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert client.get("/v1/experiments", headers=auth(keys["viewer"])).status_code == 200


def test_failures_are_never_cached_and_malformed_keys_never_looked_up(
    client: TestClient, keys: dict[str, str]
) -> None:
    cache = client.app.state.xp.auth.keys  # type: ignore[attr-defined]
    for number in range(200):
        client.get("/v1/experiments", headers=auth(f"not-a-key-{number}" * 50))
        client.get("/v1/experiments", headers=auth(f"xps_{number:012x}_" + "B" * 43))
    assert len(cache) == 0
    client.get("/v1/experiments", headers=auth(keys["viewer"]))
    assert len(cache) == 1


def test_failed_authentication_is_logged_without_the_secret(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="api.auth"):
        client.get("/v1/experiments", headers=auth(BAD))
    assert "key 000000000000" in caplog.text and "A" * 43 not in caplog.text


def test_keys_are_audited_and_a_revoked_key_stops_at_once(
    client: TestClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    made = client.post("/v1/keys", json={"role": "viewer", "name": "temp"}, headers=admin)
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    token, key_id = made.json()["token"], made.json()["key_id"]
    assert client.get("/v1/experiments", headers=auth(token)).status_code == 200  # now cached
    assert client.delete(f"/v1/keys/{key_id}", headers=admin).status_code == 204
    assert client.get("/v1/experiments", headers=auth(token)).status_code == 401
    admin_id = keys["admin"].split("_")[1]
    audit = client.get("/v1/audit", headers=admin).json()
    by_action = {row["action"]: row for row in audit if row["entity_key"] == key_id}
    assert by_action["key.create"]["actor"] == f"key:{admin_id}"
    assert by_action["key.revoke"]["actor"] == f"key:{admin_id}"
    assert by_action["key.create"]["after"]["role"] == "viewer"


def test_security_headers(client: TestClient, keys: dict[str, str]) -> None:
    for response in (
        client.get("/health"),
        client.get("/v1/experiments", headers=auth(keys["viewer"])),
        client.get("/v1/experiments"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("access", "role", "status"),
    [
        ("loopback", None, 200),  # the test client counts as local
        ("key", None, 401),
        ("key", "sdk", 403),
        ("key", "analyst", 200),
        ("open", None, 200),
    ],
)
def test_metrics_wants_an_analyst_key_unless_open_to_the_caller(
    engine: Engine,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    access: str,
    role: str | None,
    status: int,
) -> None:
    monkeypatch.setenv("XPSTREAM_METRICS_ACCESS", access)
    with make_client(engine, f"{HOST}:{free_port()}") as test_client:
        headers = auth(keys[role]) if role else {}
        assert test_client.get("/metrics", headers=headers).status_code == status


def test_a_developer_may_switch_a_flag_off_and_it_is_audited(
    client: TestClient, keys: dict[str, str]
) -> None:
    """The decision: turning a flag off is the everyday kill switch of whoever ships it, so a
    developer may (audited); rolling back, which records a breach and is what guardrails do,
    stays with admins. Both serve control to everyone."""
    developer = auth(keys["developer"])
    off = client.put("/v1/flags/new-checkout", json={"enabled": False}, headers=developer)
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert client.post("/v1/flags/new-checkout/rollback", headers=developer).status_code == 403
    [assignment] = client.get(
        "/v1/assignments?user_id=u1&experiment=checkout", headers=auth(keys["sdk"])
    ).json()["assignments"]
    assert assignment["reason"] == "flag_disabled" and assignment["in_experiment"] is False
    audit = client.get("/v1/audit", headers=auth(keys["admin"])).json()
    assert audit[0]["action"] == "flag.update" and audit[0]["after"]["enabled"] is False


def test_docs_are_served_by_the_api_itself(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_metrics_read_the_database_at_most_every_10_seconds(
    client: TestClient, engine: Engine
) -> None:
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get("/metrics").status_code == 200
        first = len(statements)
        for _ in range(5):
            assert client.get("/metrics").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert first >= 4  # rollbacks, dead letters, alerts, search backlog
    assert len(statements) == first  # the next scrapes: from the cached figures
