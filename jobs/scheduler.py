"""The scheduler (docs/design.md §17, §18): every XPSTREAM_SCHEDULER_INTERVAL_SECONDS, each due
experiment transition and each rollout stage whose trigger allows it, one transaction apiece
with its audit row and a catalog version bump (SDK payloads and streams follow).

Two schedulers never apply a move twice: each move takes the catalog lock first, claims its row
(``FOR UPDATE SKIP LOCKED`` on Postgres) and checks again, under the lock, that it is still due.
On SQLite run one scheduler (its lock is the whole database's, and there is no SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from config.catalog import Catalog, Experiment
from config.lifecycle import due, transition
from config.rollouts import RolloutIn, Stage
from jobs.leading_loop import every
from sinks.sql.analysis import analyse_stored
from sinks.sql.audit import audit
from sinks.sql.leases import Lease
from sinks.sql.models import ExperimentRow, GuardrailStateRow, RolloutRow
from sinks.sql.rollouts import advance, locked_rollout
from sinks.sql.store import (
    as_utc,
    bump_catalog_version,
    load_effective_catalog,
    read_catalog,
    write_experiment,
)
from stats.analysis import AnalysisOptions
from stats.experiment_analysis import guardrail_checks

log = logging.getLogger(__name__)
ACTOR = "scheduler"
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Tick:
    """What one pass applied: ``(experiment, action)`` and ``(rollout id, new stage)``."""

    transitions: list[tuple[str, str]] = field(default_factory=list)
    advanced: list[tuple[int, int]] = field(default_factory=list)


def schedule_once(
    engine: Engine, options: AnalysisOptions, now: datetime, lease: Lease | None = None
) -> Tick:
    """Apply every move due at ``now``; safe to repeat and to run beside another scheduler.
    With ``lease``, each move commits only while the lease is this replica's."""
    tick = Tick()
    for key in _due_candidates(engine, now):
        action = _apply_transition(engine, key, now, lease)
        if action is not None:
            tick.transitions.append((key, action))
    for rollout_id, stage, why in _ready_rollouts(engine, options, now):
        if _advance(engine, rollout_id, stage, now, why, lease):
            tick.advanced.append((rollout_id, stage + 1))
    return tick


def _due_candidates(engine: Engine, now: datetime) -> list[str]:
    """Experiments whose schedule may be due (read without locks; checked again under them)."""
    with Session(engine) as session:
        return list(
            session.scalars(
                select(ExperimentRow.key).where(
                    or_(
                        ExperimentRow.status.in_(("scheduled", "paused"))
                        & (ExperimentRow.start_at <= now),
                        ExperimentRow.status.in_(("running", "paused"))
                        & (ExperimentRow.end_at <= now),
                    )
                )
            )
        )


def _apply_transition(engine: Engine, key: str, now: datetime, lease: Lease | None) -> str | None:
    with Session(engine) as session, session.begin():
        if lease is not None:
            lease.check(session)
        bump_catalog_version(session)
        claimed = session.scalars(
            select(ExperimentRow.key)
            .where(ExperimentRow.key == key)
            .with_for_update(skip_locked=True)
        ).first()
        experiment = read_catalog(session).experiment(key) if claimed else None
        action = None if experiment is None else due(experiment, now)
        if experiment is None or action is None:
            session.rollback()  # another scheduler applied it: no version bump either
            return None
        # The times recorded are the schedule's, so the experiment counts exactly that period.
        at = experiment.end_at if action == "stop" else experiment.start_at
        after = transition(experiment, action, at or now)
        write_experiment(session, after)
        audit(
            session,
            at=now,
            actor=ACTOR,
            action=f"experiment.{action}",
            entity_type="experiment",
            entity_key=key,
            before=experiment.model_dump(mode="json"),
            after=after.model_dump(mode="json"),
        )
        return action


def _ready_rollouts(
    engine: Engine, options: AnalysisOptions, now: datetime
) -> list[tuple[int, int, str]]:
    """Running schedules whose current stage's trigger allows the next one: id, stage, why."""
    with Session(engine) as session:
        rows = list(session.scalars(select(RolloutRow).where(RolloutRow.state == "running")))
        breached = {
            e
            for (e,) in session.execute(
                select(GuardrailStateRow.experiment).where(
                    GuardrailStateRow.breached_at.is_not(None)
                )
            )
        }
    if not rows:
        return []
    catalog: Catalog | None = None
    ready = []
    for row in rows:
        stage = RolloutIn.model_validate(row.definition).stages[row.stage]
        waited = now - as_utc(row.stage_started_at)
        if stage.trigger == "manual" or waited < timedelta(seconds=stage.min_duration_seconds):
            continue
        if stage.trigger == "time":
            if stage.at is None or stage.at <= now:
                ready.append((row.id, row.stage, f"time: stage {row.stage} ran {waited}"))
            continue
        if row.experiment in breached:
            continue  # the analyzer rolls it back
        catalog = catalog or load_effective_catalog(engine)
        why = _metric_gate(engine, catalog, catalog.experiment(row.experiment), stage, options)
        if why is not None:
            ready.append((row.id, row.stage, why))
    return ready


def _metric_gate(
    engine: Engine,
    catalog: Catalog,
    experiment: Experiment,
    stage: Stage,
    options: AnalysisOptions,
) -> str | None:
    """Why the stage may advance: each arm has ``min_users``, no guardrail is breached, SRM is
    clear; None while any of these does not hold."""
    analysis = analyse_stored(engine, catalog, [experiment], options)
    sizes = analysis.arm_sizes(experiment.key)
    users = [sizes.get(v, 0) for v in experiment.variant_keys]
    if min(users) < stage.min_users:
        return None
    checks = guardrail_checks(experiment, analysis.results_of(experiment.key))
    if any(c.status == "breached" for c in checks):
        return None
    srm = analysis.srm_of(experiment.key)
    if srm is not None and srm.mismatch:
        return None
    return (
        f"metric: {users} users per arm (≥ {stage.min_users}), "
        f"{len(checks)} guardrail checks clear, SRM p={srm.p_value if srm else float('nan'):.3g}"
    )


def _advance(
    engine: Engine, rollout_id: int, stage: int, now: datetime, why: str, lease: Lease | None
) -> bool:
    """Moves the schedule on from ``stage``, unless it has moved (or stopped) since it was read:
    another scheduler, an admin or the analyzer got there first."""
    with Session(engine) as session, session.begin():
        if lease is not None:
            lease.check(session)
        row = locked_rollout(session, rollout_id)
        if row.state != "running" or row.stage != stage:
            session.rollback()
            return False
        advance(session, row, ACTOR, now, why)
        return True


async def run_scheduler(
    engine: Engine,
    options: AnalysisOptions,
    interval: float,
    stop: asyncio.Event,
    clock: Clock = system_clock,
    lease: Lease | None = None,
) -> None:
    """A pass every ``interval`` seconds until ``stop``; a failed pass is logged and retried.
    With ``lease``, only the replica holding it passes; the others wait to take it over."""

    def logged(tick: Tick) -> None:
        for key, action in tick.transitions:
            log.info("scheduler: experiment %s %s", key, action)
        for rollout_id, stage in tick.advanced:
            log.info("scheduler: rollout %s at stage %s", rollout_id, stage)

    await every(
        "scheduler pass",
        interval,
        stop,
        lambda: schedule_once(engine, options, clock(), lease),
        logged,
        lease,
    )
