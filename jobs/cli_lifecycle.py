"""`xpstream experiments …` and `xpstream rollouts …`: the lifecycle and rollout moves of the
API from the command line, through the same services (so the same rules, 409s and audit rows;
the actor is ``key:cli-<user>``)."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer

from jobs.cli import console, database, fail, settings_or_exit

T = TypeVar("T")
experiments_app = typer.Typer(help="Experiments: list, schedule, start, pause, resume, stop.")
rollouts_app = typer.Typer(help="Rollout schedules: create, list, advance, rollback.")


def _caller() -> Any:
    from api.auth import Caller

    return Caller(key_id=f"cli-{getpass.getuser()}", role="admin")


def _service(call: Callable[[Any], T]) -> T:
    """``call(engine)`` on the configured database; an HTTP refusal exits 1 with its reason."""
    from fastapi import HTTPException

    with database(settings_or_exit()) as engine:
        try:
            return call(engine)
        except HTTPException as exc:
            fail(f"{exc.detail}", code=1)


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not an ISO 8601 time (e.g. 2031-05-01T09:00:00Z)")
    if moment.tzinfo is None:
        fail(f"{option}: give the UTC offset (e.g. 2031-05-01T09:00:00Z)")
    return moment


@experiments_app.command("list")
def experiments_list(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for other programs."),
) -> None:
    """Every experiment with its state and times."""
    from sqlalchemy.orm import Session

    from api.catalog_service import experiments_public

    def listing(engine: Any) -> list[dict[str, Any]]:
        with Session(engine) as session:
            return [e.model_dump(mode="json") for e in experiments_public(session)]

    rows = _service(listing)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    for row in rows:
        times = "  ".join(
            f"{name}={row[name]}"
            for name in ("start_at", "started_at", "end_at", "stopped_at")
            if row[name]
        )
        console.print(f"{row['key']:<32} {row['status']:<10} {times}", highlight=False)


@experiments_app.command("schedule")
def experiments_schedule(
    key: str,
    start_at: str | None = typer.Option(None, help="ISO 8601 with offset; starts or resumes."),
    end_at: str | None = typer.Option(None, help="ISO 8601 with offset; stops."),
) -> None:
    """Set when the scheduler starts (a draft) or resumes (a paused experiment), and stops it."""
    from api.catalog_service import schedule_experiment

    start, end = _time(start_at, "--start-at"), _time(end_at, "--end-at")
    result = _service(lambda e: schedule_experiment(e, _caller(), key, start, end, None))
    console.print(f"{key}: {result.status}", highlight=False)


def _move(action: str) -> Callable[[str], None]:
    def command(key: str) -> None:
        from api.catalog_service import transition_experiment

        result = _service(
            lambda e: transition_experiment(e, _caller(), key, action, None)  # type: ignore[arg-type]
        )
        console.print(f"{key}: {result.status}", highlight=False)

    command.__doc__ = f"{action.capitalize()} the experiment now."
    return command


for _action in ("start", "pause", "resume", "stop"):
    experiments_app.command(_action)(_move(_action))


@rollouts_app.command("create")
def rollouts_create(file: Path) -> None:
    """A rollout schedule from a YAML or JSON file (the body of POST /v1/rollout-schedules)."""
    import yaml
    from pydantic import ValidationError

    from api.rollout_service import create
    from config.rollouts import RolloutIn

    try:
        text = file.read_text(encoding="utf-8")
        body = RolloutIn.model_validate(
            json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        )
    except OSError as exc:
        fail(f"{file}: {exc.strerror}")
    except (ValueError, yaml.YAMLError) as exc:
        problems = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else str(exc)
        )
        fail(f"{file}: {problems}")
    rollout = _service(lambda e: create(e, _caller(), body))
    console.print(
        f"rollout schedule {rollout['id']}: {rollout['flag']} at {rollout['percent']:g}%",
        highlight=False,
    )


@rollouts_app.command("list")
def rollouts_list(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for other programs."),
) -> None:
    """Every rollout schedule with its stage and guardrail states."""
    from api.rollout_service import listing

    rows = _service(listing)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    for row in rows:
        breached = [g["metric"] for g in row["guardrail_states"] if g["status"] == "breached"]
        console.print(
            f"{row['id']:>4} {row['flag']:<28} {row['state']:<12} stage {row['stage']} "
            f"({row['percent']:g}%)" + (f"  breached: {', '.join(breached)}" if breached else ""),
            highlight=False,
        )


@rollouts_app.command("advance")
def rollouts_advance(rollout_id: int) -> None:
    """The next stage now, whatever its trigger."""
    from api.rollout_service import move

    row = _service(lambda e: move(e, _caller(), rollout_id, "advance", ""))
    console.print(f"rollout schedule {rollout_id}: {row['state']} at {row['percent']:g}%")


@rollouts_app.command("rollback")
def rollouts_rollback(
    rollout_id: int, reason: str = typer.Option("rolled back by hand", help="Why.")
) -> None:
    """Everyone gets the old value again."""
    from api.rollout_service import move

    row = _service(lambda e: move(e, _caller(), rollout_id, "rollback", reason))
    console.print(f"rollout schedule {rollout_id}: {row['state']}")
