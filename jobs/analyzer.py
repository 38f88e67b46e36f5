"""The analyzer loop: every ANALYSIS_INTERVAL_SECONDS, one vectorised analysis of all running
experiments; guardrail breaches roll flags back and SRM mismatches alert, each decision in the
same transaction as its audit row, alert row and outbox row (docs/design.md §1, §10)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from config.catalog import Experiment
from jobs.leading_loop import every
from sinks.sql.alerts import add_alert, alert_payload
from sinks.sql.analysis import analyse_stored
from sinks.sql.audit import rollback_flag
from sinks.sql.leases import Lease
from sinks.sql.models import GuardrailStateRow, SrmStateRow
from sinks.sql.results import HistoryRetention, record_results
from sinks.sql.rollouts import locked_rollout, roll_back, rollout_of_experiment
from sinks.sql.store import load_effective_catalog
from stats.analysis import AnalysisOptions
from stats.experiment_analysis import (
    Analysis,
    ComparisonResult,
    GuardrailCheck,
    SrmResult,
    guardrail_checks,
)

log = logging.getLogger(__name__)


@dataclass
class Look:
    looked_at: datetime
    comparisons: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    search_outbox: bool = False


def analyze_once(
    engine: Engine,
    alpha: float,
    tau: float,
    now: datetime | None = None,
    search_outbox: bool = False,
    retention: HistoryRetention | None = None,
    lease: Lease | None = None,
) -> Look:
    """One look: read cumulative statistics, analyse, store, act. Safe to repeat.
    ``search_outbox`` queues results and alerts for OpenSearch in the same transaction; with
    ``lease``, the transaction commits only while the lease is this replica's."""
    look = Look(looked_at=now or datetime.now(UTC), search_outbox=search_outbox)
    catalog = load_effective_catalog(engine)
    # A paused experiment is analysed and guarded on the data it collected.
    running = [e for e in catalog.experiments if e.status in ("running", "paused")]
    if not running:
        return look
    analysis = analyse_stored(engine, catalog, running, AnalysisOptions(alpha, tau))
    look.comparisons = len(analysis.results)
    results: dict[str, list[ComparisonResult]] = defaultdict(list)
    for result in analysis.results:
        results[result.experiment].append(result)
    srms = {srm.experiment: srm for srm in analysis.srm}
    keys = [e.key for e in running]
    with Session(engine) as session, session.begin():
        if lease is not None:
            lease.check(session)
        record_results(
            session,
            analysis.results,
            look.looked_at,
            search_outbox,
            retention,
        )
        # Every state row of the look in two reads, not one per comparison.
        states = States(
            {
                (s.experiment, s.metric, s.variant): s
                for s in session.scalars(
                    select(GuardrailStateRow).where(GuardrailStateRow.experiment.in_(keys))
                )
            },
            {
                s.experiment: s
                for s in session.scalars(
                    select(SrmStateRow).where(SrmStateRow.experiment.in_(keys))
                )
            },
        )
        for experiment in running:
            for check in guardrail_checks(experiment, results[experiment.key]):
                _apply_guardrail(session, experiment, check, look, states)
            srm = srms.get(experiment.key)
            if srm is not None:
                _apply_srm(session, experiment, srm, analysis, look, states)
    return look


@dataclass
class States:
    """The guardrail and SRM state rows of the experiments a look analyses."""

    guardrails: dict[tuple[str, str, str], GuardrailStateRow]
    srm: dict[str, SrmStateRow]


def _apply_guardrail(
    session: Session, experiment: Experiment, check: GuardrailCheck, look: Look, states: States
) -> None:
    key = (experiment.key, check.guardrail.metric, check.variant)
    state = states.guardrails.get(key)
    if state is None:
        state = states.guardrails[key] = GuardrailStateRow(
            experiment=key[0], metric=key[1], variant=key[2], action_taken="none"
        )
        session.add(state)
    if state.breached_at is not None:  # a breach is final: never re-alerted, never re-rolled
        return
    if state.status != check.status:
        state.status, state.looked_at = check.status, look.looked_at
    if check.status != "breached":
        return
    result, guardrail = check.result, check.guardrail
    action = "none"
    # A rollout schedule's comparison rolls back the schedule, not the whole flag.
    rollout = rollout_of_experiment(session, experiment.key)
    extra = {"rollout_schedule": rollout.id, "stage": rollout.stage} if rollout else {}
    if guardrail.action == "rollback" and experiment.flag is not None:
        low, high = result.sequential_rel_ci or (float("nan"), float("nan"))
        reason = (
            f"guardrail {guardrail.metric} breached by {check.variant}: relative effect "
            f"{result.rel_effect or 0.0:+.2%}, always-valid interval [{low:+.2%}, {high:+.2%}], "
            f"margin {guardrail.margin:.2%} ({guardrail.bad_direction} is bad)"
        )
        actor = f"guardrail:{experiment.key}/{guardrail.metric}"
        if rollout is not None:
            done = roll_back(
                session, locked_rollout(session, rollout.id), actor, look.looked_at, reason
            )
        else:
            done = rollback_flag(
                session, experiment.flag, reason=reason, actor=actor, at=look.looked_at
            )
        if done:
            action = "rollback"
            look.rolled_back.append(experiment.flag)
    payload = alert_payload(
        "guardrail_breach",
        experiment.key,
        experiment.flag,
        look.looked_at,
        metric=guardrail.metric,
        variant=check.variant,
        rel_effect=result.rel_effect,
        rel_ci=list(result.sequential_rel_ci) if result.sequential_rel_ci else None,
        margin=guardrail.margin,
        sequential_p_value=result.sequential_p_value,
        n_control=result.n_control,
        n_variant=result.n_variant,
        action_taken=action,
        **extra,
    )
    add_alert(session, payload, look.looked_at, look.search_outbox)
    state.breached_at, state.alert_id, state.action_taken = (
        look.looked_at,
        payload["alert_id"],
        action,
    )
    look.alerts.append(payload)


def _apply_srm(
    session: Session,
    experiment: Experiment,
    srm: SrmResult,
    analysis: Analysis,
    look: Look,
    states: States,
) -> None:
    state = states.srm.get(experiment.key)
    if state is None:
        state = states.srm[experiment.key] = SrmStateRow(
            experiment=experiment.key, alert_open=False
        )
        session.add(state)
    state.looked_at, state.p_value, state.mismatch = look.looked_at, srm.p_value, srm.mismatch
    if not srm.mismatch:
        state.alert_open = False  # cleared: a later mismatch alerts again
        return
    if state.alert_open:
        return
    state.alert_open = True
    sizes = analysis.arm_sizes(experiment.key)
    payload = alert_payload(
        "srm_mismatch",
        experiment.key,
        experiment.flag,
        look.looked_at,
        n_control=sizes.get(experiment.control, 0),
        n_variant=sum(n for v, n in sizes.items() if v != experiment.control),
        srm_p_value=srm.p_value,
        arm_sizes=sizes,
    )
    add_alert(session, payload, look.looked_at, look.search_outbox)
    look.alerts.append(payload)


async def run_analyzer(
    engine: Engine,
    alpha: float,
    tau: float,
    interval: float,
    stop: asyncio.Event,
    on_alerts: Callable[[Look], None] | None = None,
    search_outbox: bool = False,
    retention: HistoryRetention | None = None,
    lease: Lease | None = None,
) -> None:
    """Look every ``interval`` seconds until ``stop``; a failed look is logged and retried.
    With ``lease``, only the replica holding it looks; the others wait to take it over."""

    def alerted(look: Look) -> None:
        if look.alerts and on_alerts is not None:
            on_alerts(look)

    await every(
        "analyzer look",
        interval,
        stop,
        lambda: analyze_once(engine, alpha, tau, None, search_outbox, retention, lease),
        alerted,
        lease,
    )
