"""A rollout schedule's stages over 100,000 ids: as it goes 1 → 5 → 10 → 25 → 50% no user
changes arm and the two arms stay equal in expectation; GrowthBook's own Python SDK (the
`growthbook` package, unmodified), loading the payload from a running API, and
`/v1/flags/evaluate` agree on every user's value and arm at every stage; at 100% everyone
reaching the flag's default gets the new value, and a rollback gives everyone the old one."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx
import pytest
from growthbook import GrowthBook
from growthbook.growthbook import feature_repo
from scipy import stats
from sqlalchemy import Engine

from api.app import create_app
from config.catalog import parse_catalog
from config.settings import Settings
from pipelines.embedded_broker import HOST, free_port
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog
from tests.api.conftest import auth, live_server

USERS = 100_000
STAGES = [1, 5, 10, 25, 50]
CATALOG: dict[str, Any] = {
    "metrics": [{"key": "errors", "kind": "count", "higher_is_better": False}],
    "flags": [
        {
            "key": "checkout-v2",
            "type": "string",
            "default": "v1",
            "rules": [{"id": "staff", "condition": {"staff": True}, "value": "staff-build"}],
        }
    ],
}
ROLLOUT = {
    "flag": "checkout-v2",
    "value": "v2",
    "stages": [*({"percent": p, "trigger": "manual"} for p in STAGES), {"percent": 100}],
    "guardrails": [{"metric": "errors", "bad_direction": "increase"}],
}
Arm = tuple[str, str | None]  # value served, arm (None: outside the comparison)


@pytest.fixture()
def api(tmp_path: Any) -> Iterator[tuple[str, Engine, dict[str, str]]]:
    database = f"sqlite:///{tmp_path}/rollout.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, parse_catalog(CATALOG))
    keys = {role: create_api_key(engine, role, role) for role in ("client", "sdk", "developer")}
    settings = Settings(database_url=database, namespace="rollout", partitions=4)
    with live_server(create_app(settings, engine, f"{HOST}:{free_port()}")) as url:
        yield url, engine, keys
    engine.dispose()


def server_arms(client: httpx.Client, ids: list[str]) -> list[Arm]:
    arms: list[Arm] = []
    for start in range(0, len(ids), 1000):
        items = [{"user_id": u} for u in ids[start : start + 1000]]
        answer = client.post(
            "/v1/flags/evaluate/batch", json={"items": items, "flags": ["checkout-v2"]}
        )
        assert answer.status_code == 200, answer.text
        for result in answer.json()["results"]:
            flag = result["flags"]["checkout-v2"]
            arms.append((flag["value"], flag["variant"] if flag["in_experiment"] else None))
    return arms


def sdk_arms(url: str, client_key: str, ids: list[str]) -> list[Arm]:
    feature_repo.clear_cache()  # the package caches payloads process-wide
    growthbook = GrowthBook(api_host=url, client_key=client_key)
    growthbook.load_features()
    arms: list[Arm] = []
    for user in ids:
        growthbook.set_attributes({"id": user})
        result = growthbook.eval_feature("checkout-v2")
        experiment = result.experimentResult
        arms.append(
            (result.value, experiment.key if experiment and experiment.inExperiment else None)
        )
    growthbook.destroy()
    return arms


def test_stages_keep_every_user_in_their_arm_and_sdk_and_server_agree(
    api: tuple[str, Engine, dict[str, str]],
) -> None:
    url, _engine, keys = api
    ids = [f"user-{n}" for n in range(USERS)]
    # The SDK evaluates in a process of its own while the server answers: two cores.
    spawn = multiprocessing.get_context("spawn")
    with (
        httpx.Client(base_url=url, timeout=60) as client,
        ProcessPoolExecutor(1, mp_context=spawn) as sdk,
    ):
        developer = auth(keys["developer"])
        created = client.post("/v1/rollout-schedules", json=ROLLOUT, headers=developer)
        assert created.status_code == 201, created.text
        rollout = created.json()
        assert rollout["experiment"] == f"rollout:checkout-v2:{rollout['id']}"
        evaluator = httpx.Client(base_url=url, headers=auth(keys["sdk"]), timeout=60)
        before: list[Arm] | None = None
        for stage, percent in enumerate(STAGES):
            listed = client.get(f"/v1/rollout-schedules/{rollout['id']}", headers=developer)
            assert (listed.json()["stage"], listed.json()["percent"]) == (stage, percent)
            in_sdk = sdk.submit(sdk_arms, url, keys["client"], ids)
            served = server_arms(evaluator, ids)
            assert in_sdk.result() == served, f"stage {percent}%"
            off = sum(arm == ("v1", "off") for arm in served)
            on = sum(arm == ("v2", "on") for arm in served)
            outside = sum(arm == ("v1", None) for arm in served)
            assert off + on + outside == USERS, f"unexpected arms at {percent}%"
            p = percent / 100
            for count in (off, on):  # each arm holds p of the users (binomial, two-sided)
                assert stats.binomtest(count, USERS, p).pvalue > 1e-4, (percent, count)
            assert stats.binomtest(on, on + off, 0.5).pvalue > 1e-4, (percent, off, on)
            if before is not None:  # no user left an arm; the new ones came from outside
                moved = [
                    (old, new)
                    for old, new in zip(before, served, strict=True)
                    if old[1] is not None and old != new
                ]
                assert moved == [], moved[:5]
            before = served
            advanced = client.post(
                f"/v1/rollout-schedules/{rollout['id']}/advance", headers=developer
            )
            assert advanced.status_code == 200, advanced.text

        assert advanced.json()["state"] == "released" and advanced.json()["percent"] == 100
        released = server_arms(evaluator, ids[:5000])
        assert set(released) == {("v2", None)}
        assert sdk_arms(url, keys["client"], ids[:5000]) == released
        staff = evaluator.post(
            "/v1/flags/evaluate",
            json={"user_id": "u1", "attributes": {"staff": True}, "flags": ["checkout-v2"]},
        )
        assert staff.json()["flags"]["checkout-v2"]["value"] == "staff-build"  # rules above
        again = client.post(f"/v1/rollout-schedules/{rollout['id']}/advance", headers=developer)
        assert again.status_code == 409 and again.json()["detail"].startswith(
            "advance_when_released:"
        )
        evaluator.close()


def test_a_rollback_serves_everyone_the_old_value(
    api: tuple[str, Engine, dict[str, str]],
) -> None:
    url, _engine, keys = api
    ids = [f"user-{n}" for n in range(5000)]
    with httpx.Client(base_url=url, timeout=60) as client:
        developer = auth(keys["developer"])
        rollout = client.post("/v1/rollout-schedules", json=ROLLOUT, headers=developer).json()
        for _ in range(3):
            client.post(f"/v1/rollout-schedules/{rollout['id']}/advance", headers=developer)
        with httpx.Client(base_url=url, headers=auth(keys["sdk"]), timeout=60) as evaluator:
            assert ("v2", "on") in server_arms(evaluator, ids)
            back = client.post(
                f"/v1/rollout-schedules/{rollout['id']}/rollback",
                json={"reason": "support tickets"},
                headers=developer,
            )
            assert back.status_code == 200 and back.json()["state"] == "rolled_back"
            assert set(server_arms(evaluator, ids)) == {("v1", None)}
        assert set(sdk_arms(url, keys["client"], ids)) == {("v1", None)}
        second = client.post(
            "/v1/rollout-schedules", json=ROLLOUT, headers=developer
        )  # the flag is free again
        assert second.status_code == 201, second.text
        busy = client.post("/v1/rollout-schedules", json=ROLLOUT, headers=developer)
        assert busy.status_code == 409 and busy.json()["detail"].startswith("one_rollout_per_flag:")
        audit = client.get("/v1/audit", headers=developer).json()
        assert [a["action"] for a in audit if a["entity_type"] == "rollout"][:2] == [
            "rollout.create",
            "rollout.rollback",
        ]


@pytest.mark.parametrize(
    ("stages", "problem"),
    [
        ([{"percent": 75}, {"percent": 100}], "75 is refused"),
        ([{"percent": 10}, {"percent": 5}, {"percent": 100}], "percents must grow"),
        ([{"percent": 10}, {"percent": 50}], "the last stage is 100"),
    ],
)
def test_stages_that_would_move_users_are_refused(
    api: tuple[str, Engine, dict[str, str]], stages: list[dict[str, Any]], problem: str
) -> None:
    url, _engine, keys = api
    body = {**ROLLOUT, "stages": stages}
    response = httpx.post(
        f"{url}/v1/rollout-schedules", json=body, headers=auth(keys["developer"]), timeout=30
    )
    assert response.status_code == 422 and problem in response.text, response.text
    wrong_type = {**ROLLOUT, "value": 2}
    response = httpx.post(
        f"{url}/v1/rollout-schedules", json=wrong_type, headers=auth(keys["developer"]), timeout=30
    )
    assert response.status_code == 422 and "a string flag serves strings" in response.text
