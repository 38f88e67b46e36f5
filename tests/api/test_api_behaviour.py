"""Assignments, validation errors and failures as a client sees them."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from fastapi.testclient import TestClient
from scipy import stats as sps
from sqlalchemy import Engine

from stats.assignment import bucket_ranges, hash_unit
from tests.api.conftest import auth


def test_assignments_follow_growthbook_hashing(client: TestClient, keys: dict[str, str]) -> None:
    body = client.get("/v1/assignments?user_id=user-42", headers=auth(keys["sdk"])).json()
    by_key = {a["experiment"]: a for a in body["assignments"]}
    assert set(by_key) == {"checkout", "banner-test"}
    # Independently: GrowthBook's rule, hash v1 for banner-test with coverage 0.5.
    unit = hash_unit("banner-test", "user-42", 1)
    assert unit is not None
    ranges = bucket_ranges(2, 0.5, [0.5, 0.5])
    inside = [low <= unit < high for low, high in ranges]
    banner = by_key["banner-test"]
    assert banner["hash_version"] == 1
    assert banner["in_experiment"] == any(inside)
    assert banner["variant"] == (["off", "on"][inside.index(True)] if any(inside) else "off")


def test_batch_equals_single_and_split_passes_srm(client: TestClient, keys: dict[str, str]) -> None:
    users = [f"u-{i}" for i in range(1000)]
    batch = client.post(
        "/v1/assignments/batch",
        json={"user_ids": users, "experiment": "checkout"},
        headers=auth(keys["sdk"]),
    ).json()["assignments"]
    for row in batch[:50]:
        single = client.get(
            f"/v1/assignments?user_id={row['user_id']}&experiment=checkout",
            headers=auth(keys["sdk"]),
        ).json()
        assert single["assignments"] == row["assignments"]
    variants = [row["assignments"][0]["variant"] for row in batch]
    counts = [variants.count("control"), variants.count("treatment")]
    assert sum(counts) == 1000 and sps.chisquare(counts).pvalue > 0.001
    metrics = client.get("/metrics").text
    assert 'route="/v1/assignments",status="200"} 50.0' in metrics


def test_rolled_back_flag_serves_control_at_once(client: TestClient, keys: dict[str, str]) -> None:
    users = [f"u-{i}" for i in range(200)]

    def variants() -> list[str]:
        rows = client.post(
            "/v1/assignments/batch",
            json={"user_ids": users, "experiment": "checkout"},
            headers=auth(keys["sdk"]),
        ).json()["assignments"]
        return [r["assignments"][0]["variant"] for r in rows]

    assert "treatment" in variants()
    rolled = client.post(
        "/v1/flags/new-checkout/rollback",
        json={"reason": "checkout errors"},
        headers=auth(keys["admin"]),
    )
    assert rolled.status_code == 200 and rolled.json()["rolled_back"] is True
    assert set(variants()) == {"control"}
    single = client.get(
        "/v1/assignments?user_id=u-1&experiment=checkout", headers=auth(keys["sdk"])
    ).json()["assignments"][0]
    assert single == {
        "experiment": "checkout",
        "in_experiment": False,
        "variant": "control",
        "hash_version": 2,
        "reason": "flag_rolled_back",
    }
    audit = client.get("/v1/audit", headers=auth(keys["analyst"])).json()
    assert audit[0]["action"] == "flag.rollback" and audit[0]["entity_key"] == "new-checkout"
    restored = client.post("/v1/flags/new-checkout/restore", headers=auth(keys["admin"]))
    assert restored.json()["rolled_back"] is False
    assert "treatment" in variants()
    actions = [a["action"] for a in client.get("/v1/audit", headers=auth(keys["admin"])).json()]
    assert actions[:2] == ["flag.restore", "flag.rollback"]


def test_errors_name_the_field(client: TestClient, keys: dict[str, str]) -> None:
    sdk = auth(keys["sdk"])
    missing = client.get("/v1/assignments", headers=sdk)
    assert missing.status_code == 422 and "user_id" in str(missing.json()["detail"])
    unknown = client.get("/v1/assignments?user_id=u&experiment=nope", headers=sdk)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    shape = client.post("/v1/events", json={"evnts": []}, headers=sdk)
    assert shape.status_code == 422 and "events" in str(shape.json()["detail"])
    too_many = client.post("/v1/events", json={"events": [{}] * 1001}, headers=sdk)
    assert too_many.status_code == 422 and "events" in str(too_many.json()["detail"])
    huge = client.post(
        "/v1/events",
        content=b'{"events": ["' + b"x" * (1024 * 1024) + b'"]}',
        headers={**sdk, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    bad_experiment = client.post(
        "/v1/experiments",
        json={
            "key": "x1",
            "control": "a",
            "variants": [{"key": "a", "weight": 1.0}, {"key": "b", "weight": 0.0}],
            "metrics": ["no-such-metric"],
        },
        headers=auth(keys["developer"]),
    )
    assert bad_experiment.status_code == 422
    assert "no-such-metric" in bad_experiment.json()["detail"]


def test_rejected_events_have_reasons_and_broker_down_is_503(
    client: TestClient, keys: dict[str, str]
) -> None:
    sdk = auth(keys["sdk"])
    only_bad = client.post(
        "/v1/events",
        json={
            "events": [
                {"type": "metric", "event_id": "e1", "ts": 1, "user_id": "u", "metric": "nope"},
                {"type": "exposure", "event_id": "e2", "ts": 1, "user_id": "u"},
                "not an object",
            ]
        },
        headers=sdk,
    )
    assert only_bad.status_code == 202
    assert [(r["index"], r["reason"]) for r in only_bad.json()["rejections"]] == [
        (0, "unknown_metric"),
        (1, "missing_field:experiment"),
        (2, "bad_type:event"),
    ]
    good = {
        "type": "metric",
        "event_id": "e3",
        "ts": 1,
        "user_id": "u",
        "metric": "revenue",
        "value": 2,
    }
    down = client.post("/v1/events", json={"events": [good]}, headers=sdk)  # no broker here
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    metrics = client.get("/metrics").text
    assert 'xpstream_api_events_rejected_total{reason="unknown_metric"} 1.0' in metrics


def test_internal_errors_carry_no_stack_trace(
    client: TestClient, keys: dict[str, str], engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE latest_results"))
    response = client.get("/v1/experiments/checkout/report", headers=auth(keys["viewer"]))
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "Traceback" not in response.text and "latest_results" not in response.text


def test_timeseries_means_equal_numpy(
    client: TestClient, keys: dict[str, str], engine: Engine
) -> None:
    from sinks.sql.store import flush_partition_state

    values = np.array([3.0, 5.0, 8.0, 13.0])
    row = {
        "experiment": "checkout",
        "variant": "treatment",
        "metric": "revenue",
        "window_start": 3600,
        "partition": 0,
        "n": 4.0,
        "sum": values.sum(),
        "sum_sq": (values**2).sum(),
        **dict.fromkeys(
            ("x_sum", "x_sum_sq", "xy_sum", "den_sum", "den_sum_sq", "num_den_sum"), 0.0
        ),
        "source_offset": 1,
    }
    flush_partition_state(engine, [row], [], [])
    [point] = client.get(
        "/v1/experiments/checkout/timeseries", headers=auth(keys["analyst"])
    ).json()
    assert point["mean"] == values.mean() and point["variance"] == values.var(ddof=1)
