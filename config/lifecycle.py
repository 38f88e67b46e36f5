"""An experiment's lifecycle (docs/design.md §17): ``draft → scheduled → running ⇄ paused →
stopped``, the schedule that moves it, and what may change once it has run. Pure functions over
:class:`~config.catalog.Experiment`; a refused change raises :class:`LifecycleError` naming the
rule it breaks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from config.catalog import Experiment

Action = Literal["start", "pause", "resume", "stop"]
ACTIONS: tuple[Action, ...] = ("start", "pause", "resume", "stop")
# Each action, the states it leaves and the state it reaches.
TRANSITIONS: dict[Action, tuple[frozenset[str], str]] = {
    "start": (frozenset({"draft", "scheduled"}), "running"),
    "pause": (frozenset({"running"}), "paused"),
    "resume": (frozenset({"paused"}), "running"),
    "stop": (frozenset({"running", "paused"}), "stopped"),
}
SCHEDULABLE = frozenset({"draft", "scheduled", "paused"})
# Fields that fix who is in which arm: changing them once users were exposed would move users
# between arms mid-experiment (start a new experiment instead).
FIXED_ONCE_STARTED = ("variants", "control", "seed", "hash_version")
STARTED = frozenset({"running", "paused", "stopped"})


class LifecycleError(ValueError):
    """A transition or edit the lifecycle forbids: ``rule`` names it (the API's 409)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


def transition(experiment: Experiment, action: Action, now: datetime) -> Experiment:
    """The experiment after ``action`` at ``now``; the times it records are ``now``'s."""
    sources, target = TRANSITIONS[action]
    if experiment.status not in sources:
        raise LifecycleError(
            f"{action}_from_{experiment.status}",
            f"{action} applies to a {' or '.join(sorted(sources))} experiment; "
            f"{experiment.key!r} is {experiment.status}",
        )
    changes: dict[str, Any] = {"status": target}
    if action == "start":
        changes["started_at"] = now
    elif action == "stop":
        changes["stopped_at"] = now
    elif action == "resume" or (action == "pause" and _passed(experiment.start_at, now)):
        changes["start_at"] = None  # consumed: a paused experiment's start_at means "resume at"
    return experiment.model_copy(update=changes)


def schedule(
    experiment: Experiment, start_at: datetime | None, end_at: datetime | None, now: datetime
) -> Experiment:
    """Set (or clear, with None) the times the scheduler starts or resumes, and stops, it."""
    if experiment.status not in SCHEDULABLE:
        raise LifecycleError(
            f"schedule_when_{experiment.status}",
            f"a schedule is set only on a draft, scheduled or paused experiment; "
            f"{experiment.key!r} is {experiment.status} (pause it first)",
        )
    for name, moment in (("start_at", start_at), ("end_at", end_at)):
        if moment is not None and moment <= now:
            raise LifecycleError("schedule_in_the_past", f"{name} {moment.isoformat()} has passed")
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise LifecycleError("schedule_order", "end_at must be after start_at")
    status = experiment.status
    if status in ("draft", "scheduled"):
        status = "scheduled" if start_at is not None else "draft"
    return experiment.model_validate(
        {**experiment.model_dump(), "status": status, "start_at": start_at, "end_at": end_at}
    )


def due(experiment: Experiment, now: datetime) -> Action | None:
    """The transition the schedule asks for at ``now``, if any."""
    if experiment.status in ("running", "paused") and _passed(experiment.end_at, now):
        return "stop"
    if experiment.status == "scheduled" and _passed(experiment.start_at, now):
        return "start"
    if experiment.status == "paused" and _passed(experiment.start_at, now):
        return "resume"
    return None


def edit_problem(before: Experiment, after: Experiment) -> LifecycleError | None:
    """Why an edit of ``before`` into ``after`` is refused; None when it is allowed. The status
    and the times move only through :func:`transition` and :func:`schedule`."""
    for name in ("status", "start_at", "end_at", "started_at", "stopped_at"):
        if getattr(before, name) != getattr(after, name):
            return LifecycleError(
                f"{name}_by_edit",
                f"{name} changes through POST .../start|pause|resume|stop and PUT .../schedule",
            )
    if before.status not in STARTED:
        return None
    for name in FIXED_ONCE_STARTED:
        if getattr(before, name) != getattr(after, name):
            return LifecycleError(
                f"{name}_fixed_once_started",
                f"{name} of a {before.status} experiment cannot change (users would change "
                "arm): start a new experiment instead",
            )
    if after.coverage < before.coverage:
        return LifecycleError(
            "coverage_only_grows",
            f"coverage of a {before.status} experiment may only grow "
            f"({before.coverage:g} → {after.coverage:g} would drop exposed users)",
        )
    return None


def _passed(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now
