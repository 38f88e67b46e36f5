"""Signing in per role, the results of the demo's experiments against the API's report, and
the console's actions (pause and resume, roll back and restore) through a real browser."""

from __future__ import annotations

import time
from typing import Any

import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from api.console.session import COOKIE, csrf_token
from jobs.simulate import demo_catalog
from tests.console.conftest import ROLES, SCREENSHOTS, Console

DEMO_EXPERIMENTS = ("checkout-lift", "aa-test", "risky-banner")


def until(browser: webdriver.Chrome, condition: Any) -> Any:
    """A click submits a form without waiting for the next page: wait for what it shows."""
    return WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException]).until(
        condition
    )


def sign_in(browser: webdriver.Chrome, console: Console, role: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{console.url}/ui/sign-in")
    browser.find_element(By.ID, "key").send_keys(console.keys[role])
    browser.find_element(By.ID, "sign-in").click()
    until(browser, lambda b: b.current_url.endswith("/ui/experiments"))
    assert until(browser, lambda b: b.find_element(By.ID, "role")).text == role


def shot(browser: webdriver.Chrome, name: str, height: int = 1000) -> None:
    browser.set_window_size(1400, height)
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def api(console: Console, path: str, role: str = "analyst") -> Any:
    response = requests.get(
        f"{console.url}{path}",
        headers={"Authorization": f"Bearer {console.keys[role]}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def buttons(browser: webdriver.Chrome) -> list[str]:
    return [b.text for b in browser.find_elements(By.CSS_SELECTOR, "main form button")]


def test_each_role_signs_in_and_gets_the_buttons_of_its_role(
    browser: webdriver.Chrome, console: Console
) -> None:
    browser.get(f"{console.url}/ui/sign-in")
    shot(browser, "sign-in", 500)
    for role in ROLES:
        sign_in(browser, console, role)
        listed = browser.find_elements(By.CSS_SELECTOR, "#experiments tr[data-experiment]")
        assert {row.get_attribute("data-experiment") for row in listed} >= set(DEMO_EXPERIMENTS)
        browser.get(f"{console.url}/ui/experiments/aa-test")
        moves = set(buttons(browser))
        assert moves == ({"Pause", "Stop"} if role in ("developer", "admin") else set()), role
        browser.get(f"{console.url}/ui/flags")
        flag_buttons = set(buttons(browser))
        assert flag_buttons == ({"Roll back", "Restore"} if role == "admin" else set()), role
    shot(browser, "flags-admin")
    browser.get(f"{console.url}/ui/experiments")
    shot(browser, "experiments-admin")
    browser.get(f"{console.url}/ui/alerts")
    assert browser.find_elements(By.CSS_SELECTOR, "#alerts tr[id]")  # the demo's two alerts
    shot(browser, "alerts-admin", 1200)


def expected_decision(result: dict[str, Any], higher_is_better: bool) -> str:
    """The API's report read as a decision: a significant effect in the metric's good direction
    wins, in its bad one loses."""
    if not result["significant"]:
        return "inconclusive"
    return "win" if (result["rel_effect"] > 0) == higher_is_better else "loss"


def test_results_pages_show_the_decisions_of_the_apis_report(
    browser: webdriver.Chrome, console: Console
) -> None:
    catalog = demo_catalog()
    sign_in(browser, console, "analyst")
    decided = {}
    for key in DEMO_EXPERIMENTS:
        report = api(console, f"/v1/experiments/{key}/report")
        browser.get(f"{console.url}/ui/experiments/{key}")
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tr[data-metric]")
        shown = {
            (r.get_attribute("data-metric"), r.get_attribute("data-variant")): r.get_attribute(
                "data-decision"
            )
            for r in rows
        }
        expected = {
            (r["metric"], r["variant"]): expected_decision(
                r, catalog.metric(r["metric"]).higher_is_better
            )
            for r in report["results"]
        }
        assert shown == expected, key
        decided[key] = set(shown.values())
        # plotly.js drew every chart: one per analysed metric and the users per arm
        charts = catalog.experiment(key).analysed_metrics
        deadline = time.monotonic() + 10
        while len(browser.find_elements(By.CSS_SELECTOR, ".chart .main-svg")) < len(charts) + 1:
            assert time.monotonic() < deadline, "charts not drawn"
            time.sleep(0.1)
        guardrails = browser.find_element(By.ID, "guardrails").text
        for state in report["guardrails"]:
            assert state["status"] in guardrails
        shot(browser, f"results-{key}", 2600)
    assert "win" in decided["checkout-lift"]  # the demo's real lift
    assert decided["aa-test"] == {"inconclusive"}  # an A/A test decides nothing
    assert (
        "breached" in api(console, "/v1/experiments/risky-banner/report")["guardrails"][0]["status"]
    )


def test_a_developer_pauses_and_resumes_an_experiment(
    browser: webdriver.Chrome, console: Console
) -> None:
    sign_in(browser, console, "developer")
    for action, status in (("pause", "paused"), ("resume", "running")):
        browser.get(f"{console.url}/ui/experiments/aa-test")
        browser.find_element(By.ID, action).click()
        until(browser, lambda b, s=status: b.find_element(By.ID, "status").text == s)
        assert api(console, "/v1/experiments/aa-test/report")["status"] == status
    audit = [a["action"] for a in api(console, "/v1/audit") if a["entity_key"] == "aa-test"]
    assert audit[:2] == ["experiment.resume", "experiment.pause"]  # newest first


def test_an_admin_rolls_a_flag_back_and_the_sdk_payload_changes(
    browser: webdriver.Chrome, console: Console
) -> None:
    def feature() -> Any:
        response = requests.get(f"{console.url}/api/features/{console.keys['client']}", timeout=10)
        return response.json()["features"]["search-v2"]

    before = feature()
    assert before["rules"]  # the released rollout's force rule
    sign_in(browser, console, "admin")
    browser.get(f"{console.url}/ui/flags")
    browser.find_element(By.CSS_SELECTOR, "tr[data-flag='search-v2'] button.rollback").click()
    row = "tr[data-flag='search-v2']"
    until(browser, lambda b: "rolled back" in b.find_element(By.CSS_SELECTOR, row).text)
    shot(browser, "flags-rolled-back")
    assert feature() == {"defaultValue": before["defaultValue"], "rules": []}
    browser.find_element(By.CSS_SELECTOR, f"{row} button.restore").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"{row} button.rollback"))
    assert feature() == before


def post_form(browser: webdriver.Chrome, path: str, csrf: str) -> int:
    """The form post a page without the button could still make, from the signed-in browser."""
    script = """
        const [path, csrf, done] = arguments;
        const body = new FormData(); body.append("csrf", csrf);
        fetch(path, {method: "POST", body, redirect: "manual"}).then(r => done(r.status));
    """
    status: int = browser.execute_async_script(script, path, csrf)
    return status


def test_a_viewer_gets_no_buttons_and_403_for_a_form_posted_anyway(
    browser: webdriver.Chrome, console: Console
) -> None:
    sign_in(browser, console, "viewer")
    browser.get(f"{console.url}/ui/experiments/aa-test")
    assert buttons(browser) == []
    csrf = csrf_token(console.keys["viewer"])
    assert post_form(browser, "/ui/experiments/aa-test/pause", csrf) == 403
    assert post_form(browser, "/ui/flags/search-v2/rollback", csrf) == 403
    assert api(console, "/v1/experiments/aa-test/report")["status"] == "running"
    # A developer's session posting a form without its token is refused too (CSRF).
    sign_in(browser, console, "developer")
    assert post_form(browser, "/ui/experiments/aa-test/pause", "forged") == 403
    assert api(console, "/v1/experiments/aa-test/report")["status"] == "running"


def test_a_bad_key_is_sent_to_sign_in(browser: webdriver.Chrome, console: Console) -> None:
    browser.delete_all_cookies()
    browser.get(f"{console.url}/ui/sign-in")
    browser.add_cookie({"name": COOKIE, "value": "xps_000000000000_" + "A" * 43, "path": "/ui"})
    browser.get(f"{console.url}/ui/experiments/aa-test")
    assert browser.current_url.endswith("/ui/sign-in")
    browser.find_element(By.ID, "key").send_keys("not-a-key")
    browser.find_element(By.ID, "sign-in").click()
    assert until(browser, lambda b: b.find_element(By.ID, "error")).text == "This key is not valid."
    cookie = requests.get(
        f"{console.url}/ui/flags", cookies={COOKIE: "garbage"}, allow_redirects=False, timeout=10
    )
    assert (cookie.status_code, cookie.headers["location"]) == (303, "/ui/sign-in")
