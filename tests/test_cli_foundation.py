"""The console script: help, settings errors, and the first demo through the embedded broker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Demo

XPSTREAM = str(Path(sys.executable).with_name("xpstream"))


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XPSTREAM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_wrong_setting_stops_start_up_naming_the_variable() -> None:
    result = run("demo", env={"XPSTREAM_WINDOW_SECONDS": "abc"})
    assert result.returncode != 0
    assert "XPSTREAM_WINDOW_SECONDS" in result.stderr


def test_out_of_range_setting_is_refused() -> None:
    result = run("demo", env={"XPSTREAM_ALPHA": "1.5"})
    assert result.returncode != 0
    assert "XPSTREAM_ALPHA" in result.stderr


def test_demo_runs_the_three_experiments_and_two_rollouts(demo: Demo) -> None:
    env = {"XPSTREAM_DATABASE_URL": demo.database_url}
    result, report = demo, demo.report
    assert "checkout-lift: significant" in result.stdout
    assert "aa-test: not significant" in result.stdout
    assert "guardrail errors (treatment): breached, action taken: rollback" in result.stdout
    assert re.search(r"flag banner ROLLED BACK [\d.]+s after the first event", result.stdout)
    assert "alerts consumed from the topic: 1" in result.stdout
    assert '"kind": "guardrail_breach"' in result.stdout
    assert '"experiment": "risky-banner"' in result.stdout
    listed = run("alerts", "--json", env=env)
    alert, rollout = sorted(json.loads(listed.stdout), key=lambda a: a["flag"])
    assert (alert["flag"], alert["action_taken"]) == ("banner", "rollback")
    assert (rollout["flag"], rollout["action_taken"]) == ("payments-v2", "rollback")
    assert rollout["rollout_schedule"] == 2 and rollout["experiment"] == "rollout:payments-v2:2"
    # the healthy rollout walks every stage and is released; the regression is stopped early
    assert re.search(r"rollout of search-v2:(\n  .*)*\n  50%: .* → released", result.stdout)
    assert re.search(r"rollout of payments-v2:(\n  .*)*\n  ROLLED BACK at \d+%", result.stdout)
    users = [int(u) for u in re.findall(r"users: (\d+)", result.stdout)]
    assert users == [20_000, 20_000, 20_000]
    # per-arm user counts add up to the users simulated
    for control, treatment in re.findall(
        r"users per arm: control (\d+), treatment (\d+)", result.stdout
    ):
        assert int(control) + int(treatment) == 20_000
    page = report.read_text()
    # the console's results page as one file: plotly.js inline, nothing fetched from elsewhere
    assert "Plotly.newPlot" in page and "<script src=" not in page and len(page) > 1_000_000
    assert "console: http://127.0.0.1:" in result.stdout and "sign in with xps_" in result.stdout


def test_migrate_never_prints_the_database_password(postgres_database: str) -> None:
    with_password = postgres_database.replace("postgres@", "postgres:s3cret-pw@", 1)
    result = run("migrate", env={"XPSTREAM_DATABASE_URL": with_password})
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "***" in result.stdout
