"""Analyzer looks on real SQL: guardrail breaches roll back once, min_users holds a breach back,
and the always-valid p-value keeps its running minimum across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from jobs.analyzer import analyze_once
from sinks.sql.models import (
    AlertOutboxRow,
    AlertRow,
    AuditRow,
    FlagRow,
    GuardrailStateRow,
    LatestResultRow,
    ResultHistoryRow,
)
from sinks.sql.store import make_engine
from tests.jobs.conftest import oracle_msprt, oracle_relative, users, write_users

ALPHA, TAU = 0.05, 0.05
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def count(engine: Engine, table: type) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_min_users_not_reached_never_breaches(engine: Engine) -> None:
    frame = users(900, {"control": 0.6, "treatment": 1.2}, seed=1)  # errors doubled
    write_users(engine, frame)
    r, v = oracle_relative(frame, "errors")
    _, low, _ = oracle_msprt(r, v, TAU, ALPHA)
    assert low > 0.2  # the interval is far on the bad side: only min_users (1000) holds it back
    for look in range(3):
        result = analyze_once(engine, ALPHA, TAU, T0 + timedelta(seconds=5 * look))
        assert result.alerts == [] and result.rolled_back == []
    with Session(engine) as session:
        state = session.get(GuardrailStateRow, ("risky", "errors", "treatment"))
        assert state is not None and state.status == "waiting"
        flag = session.get(FlagRow, "banner")
        assert flag is not None and flag.rolled_back_at is None
    assert count(engine, AlertRow) == count(engine, AuditRow) == 0


def test_breach_rolls_back_once_with_audit_and_outbox(engine: Engine) -> None:
    frame = users(1200, {"control": 0.6, "treatment": 0.6 * 1.3}, seed=2)
    write_users(engine, frame)
    r, v = oracle_relative(frame, "errors")
    p_value, low, high = oracle_msprt(r, v, TAU, ALPHA)
    assert low > 0  # the oracle says: breached

    look = analyze_once(engine, ALPHA, TAU, T0)
    assert look.rolled_back == ["banner"]
    [alert] = look.alerts
    assert alert["kind"] == "guardrail_breach" and alert["action_taken"] == "rollback"
    assert (alert["experiment"], alert["flag"], alert["metric"], alert["variant"]) == (
        "risky",
        "banner",
        "errors",
        "treatment",
    )
    assert alert["rel_effect"] == pytest.approx(r, rel=1e-9)
    assert alert["rel_ci"] == pytest.approx([low, high], rel=1e-9)
    assert alert["sequential_p_value"] == pytest.approx(p_value, rel=1e-6)
    assert (alert["n_control"], alert["n_variant"]) == (1200, 1200)

    with Session(engine) as session:
        flag = session.get(FlagRow, "banner")
        assert flag is not None and flag.rolled_back_at is not None
        assert "errors" in (flag.rollback_reason or "")
        [audit] = session.scalars(select(AuditRow)).all()
        assert audit.actor == "guardrail:risky/errors" and audit.action == "flag.rollback"
        assert audit.before is not None and audit.before["rolled_back_at"] is None
        assert audit.after is not None and audit.after["rolled_back_at"] is not None
        [outbox] = session.scalars(select(AlertOutboxRow)).all()
        assert outbox.alert_id == alert["alert_id"] and outbox.key == "banner"
        assert outbox.sent_at is None

    for later in range(1, 4):  # later looks neither re-alert nor re-roll
        again = analyze_once(engine, ALPHA, TAU, T0 + timedelta(seconds=5 * later))
        assert again.alerts == [] and again.rolled_back == []
    assert count(engine, AlertRow) == count(engine, AuditRow) == count(engine, AlertOutboxRow) == 1


def test_restart_continues_the_running_minimum(engine: Engine) -> None:
    strong = users(1000, {"control": 0.6, "treatment": 0.66}, seed=3)
    write_users(engine, strong)
    first = analyze_once(engine, ALPHA, TAU, T0)
    assert first.comparisons == 2
    p_first = oracle_msprt(*oracle_relative(strong, "errors"), TAU, ALPHA)[0]

    # More users without any difference: on its own this look's p-value is larger.
    diluted = users(4000, {"control": 0.6, "treatment": 0.6}, seed=4)
    both = pd.concat([strong, diluted], ignore_index=True)
    write_users(engine, both, offset=1)
    p_alone = oracle_msprt(*oracle_relative(both, "errors"), TAU, ALPHA)[0]
    assert p_alone > p_first

    # A new engine is a restarted analyzer: only what is in SQL survives.
    restarted = make_engine(engine.url.render_as_string(hide_password=False))
    analyze_once(restarted, ALPHA, TAU, T0 + timedelta(seconds=5))
    with Session(restarted) as session:
        latest = session.get(LatestResultRow, ("risky", "errors", "treatment"))
        assert latest is not None
        assert latest.sequential_p_value == pytest.approx(min(p_first, p_alone), rel=1e-6)
        history = session.scalars(
            select(ResultHistoryRow.sequential_p_value)
            .where(ResultHistoryRow.metric == "errors")
            .order_by(ResultHistoryRow.id)
        ).all()
    restarted.dispose()
    assert history == pytest.approx([p_first, p_first], rel=1e-6)
