"""`xpstream experiments …` and `xpstream rollouts …`: the API's moves from the command line,
with the same rules (a refused move exits 1 naming the rule) and JSON listings. Invoked in
process (typer's runner): the console script itself is tested in test_cli_foundation."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import Result
from typer.testing import CliRunner

from jobs.cli import app

CATALOG = {
    "metrics": [{"key": "errors", "kind": "count", "higher_is_better": False}],
    "flags": [{"key": "search-v2", "type": "boolean", "default": False}],
    "experiments": [
        {
            "key": "ranking",
            "status": "draft",
            "control": "a",
            "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
            "metrics": ["errors"],
        }
    ],
}


def run(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "200"})


def test_experiment_moves_and_rollouts_from_the_command_line(tmp_path: Path) -> None:
    env = {"XPSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    assert run("catalog", "load", str(catalog), env=env).exit_code == 0

    scheduled = run(
        "experiments", "schedule", "ranking", "--start-at", "2031-05-01T09:00:00Z", env=env
    )
    assert scheduled.exit_code == 0 and "ranking: scheduled" in scheduled.stdout
    naive = run("experiments", "schedule", "ranking", "--end-at", "2031-05-09T09:00", env=env)
    assert naive.exit_code == 2 and "--end-at: give the UTC offset" in naive.stderr
    assert run("experiments", "start", "ranking", env=env).exit_code == 0
    again = run("experiments", "start", "ranking", env=env)
    assert again.exit_code == 1 and "start_from_running" in again.stderr
    assert run("experiments", "pause", "ranking", env=env).exit_code == 0
    [listed] = json.loads(run("experiments", "list", "--json", env=env).stdout)
    assert listed["status"] == "paused" and listed["started_at"] is not None

    rollout = tmp_path / "rollout.yaml"
    rollout.write_text(
        yaml.safe_dump(
            {
                "flag": "search-v2",
                "value": True,
                "stages": [{"percent": 5, "trigger": "manual"}, {"percent": 100}],
                "guardrails": [{"metric": "errors", "bad_direction": "increase"}],
            }
        )
    )
    created = run("rollouts", "create", str(rollout), env=env)
    assert created.exit_code == 0 and "search-v2 at 5%" in created.stdout, created.stderr
    [row] = json.loads(run("rollouts", "list", "--json", env=env).stdout)
    assert (row["state"], row["stage"], row["experiment"]) == ("running", 0, "rollout:search-v2:1")
    back = run("rollouts", "rollback", "1", "--reason", "latency", env=env)
    assert back.exit_code == 0 and "rolled_back" in back.stdout
    late = run("rollouts", "advance", "1", env=env)
    assert late.exit_code == 1 and "advance_when_rolled_back" in late.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"flag": "search-v2", "value": True, "stages": [{"percent": 75}]})
    )
    refused = run("rollouts", "create", str(bad), env=env)
    assert refused.exit_code == 2 and "stages.0: " in refused.stderr and "75" in refused.stderr
