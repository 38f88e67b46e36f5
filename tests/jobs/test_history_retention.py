"""Bounded analysis history: three days of looks every five minutes leave every look of the
last 24 hours and, before that, the first look of each hour per comparison (counted here by
pandas from the looks' times), written one statement per table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import LatestResultRow, ResultHistoryRow
from sinks.sql.results import HistoryRetention, record_results
from sinks.sql.store import make_engine
from stats.experiment_analysis import ComparisonResult

T0 = datetime(2031, 3, 1, 0, 2, 30, tzinfo=UTC)
EVERY = timedelta(minutes=5)
LOOKS = 3 * 24 * 12


def result(variant: str, look: int) -> ComparisonResult:
    """A comparison whose sequential p-value names its look."""
    undefined: dict[str, Any] = dict.fromkeys(
        ("mean_control", "mean_variant", "abs_effect", "abs_ci", "abs_p_value", "rel_effect",
         "rel_ci", "p_value", "adjusted_p_value", "variance_reduction", "sequential_rel_ci",
         "chance_to_win", "expected_loss"),
    )  # fmt: skip
    return ComparisonResult(
        experiment="e", metric="m", variant=variant, control="a", n_control=10, n_variant=10,
        significant=False, cuped=False, sequential_p_value=1 / (look + 1), **undefined,
    )  # fmt: skip


def test_three_days_of_looks_keep_the_last_day_and_one_an_hour_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/history.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    retention = HistoryRetention(full_hours=24, every_seconds=3600)
    # A second comparison joins a day and a quarter in: its hours start with its first look.
    for look in range(LOOKS):
        at = T0 + EVERY * look
        results = [result("b", look)] + ([result("c", look)] if look >= 363 else [])
        with Session(engine) as session, session.begin():
            record_results(session, results, at, retention=retention)
    now = T0 + EVERY * (LOOKS - 1)

    looks = pd.DataFrame(
        [(v, T0 + EVERY * k) for k in range(LOOKS) for v in ("b", "c") if v == "b" or k >= 363],
        columns=["variant", "at"],
    )
    looks["hour"] = looks["at"].dt.floor("h")
    first_of_hour = looks.groupby(["variant", "hour"])["at"].transform("min") == looks["at"]
    expected = looks[(looks["at"] >= now - timedelta(hours=24)) | first_of_hour]

    with Session(engine) as session:
        kept = session.execute(
            sa.select(ResultHistoryRow.variant, ResultHistoryRow.looked_at)
        ).all()
        latest = session.scalars(sa.select(LatestResultRow)).all()
    got = sorted((v, at.replace(tzinfo=UTC)) for v, at in kept)
    assert got == sorted(zip(expected["variant"], expected["at"].dt.to_pydatetime(), strict=True))
    assert len(got) < 2 * 24 * 12 + 48 + 30  # bounded: not the 1,515 looks made
    last = 1 / LOOKS  # the last look's p-value
    assert {(r.variant, r.result["sequential_p_value"]) for r in latest} == {
        ("b", last),
        ("c", last),
    }
    engine.dispose()
