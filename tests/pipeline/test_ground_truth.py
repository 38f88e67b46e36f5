"""Replay a ≥50k-event file with every kind of trouble; aggregates must equal pandas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sinks.sql.store import counter_totals, cumulative_arms, window_rows
from tests.conftest import Broker
from tests.pipeline.conftest import load_catalog, pipeline_env, xpstream
from tests.pipeline.generate import CATALOG, EventFile, generate
from tests.pipeline.ground_truth import STATS, crossover_users, ground_truth

LOOKBACK = 14 * 86400.0


@pytest.fixture(scope="module")
def event_file() -> EventFile:
    generated = generate(users=9000)
    assert len(generated.lines) >= 50_000
    return generated


def check_against_ground_truth(engine: sa.Engine, event_file: EventFile) -> None:
    truth = ground_truth(event_file.clean, event_file.catalog, LOOKBACK)
    arms = cumulative_arms(engine)
    assert set(arms) == set(truth.index)
    for key, expected in truth.iterrows():
        got = arms[key]
        for stat in STATS:
            assert got[stat] == pytest.approx(expected[stat], rel=1e-9, abs=1e-6), (key, stat)
    assert counter_totals(engine, "crossovers") == pytest.approx(crossover_users(event_file.clean))
    # The window rows add up to the totals the workers keep beside them (what the analyzer
    # reads), to the last bits of a double.
    for experiment in event_file.catalog.experiments:
        summed: dict[tuple[str, str], np.ndarray] = {}
        for row in window_rows(engine, experiment.key):
            key = (row["variant"], row["metric"])
            summed[key] = summed.get(key, 0) + np.array([row[s] for s in STATS], dtype=float)
        for (variant, metric), total in summed.items():
            cumulative = np.array([arms[(experiment.key, variant, metric)][s] for s in STATS])
            np.testing.assert_allclose(total, cumulative, rtol=1e-12)


def run_replay(env: dict[str, str], event_file: EventFile, tmp_path: Path) -> dict[str, object]:
    load_catalog(env, CATALOG, tmp_path)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(event_file.lines) + "\n")
    result = xpstream(env, "replay", str(path), "--json", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def check_counts(counts: dict[str, object], event_file: EventFile) -> None:
    unique = {(e["user_id"], e["event_id"]) for e in event_file.clean}
    assert counts["events"] == len(event_file.lines)
    assert counts["by_reason"] == dict(event_file.injected)
    assert counts["dead_lettered"] == sum(event_file.injected.values())
    assert counts["applied"] == len(unique)
    assert counts["duplicates"] == len(event_file.clean) - len(unique)


def test_replay_equals_ground_truth_sqlite(
    kafka_broker: Broker, event_file: EventFile, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/xp.db"
    env = pipeline_env(kafka_broker, database)
    counts = run_replay(env, event_file, tmp_path)
    check_counts(counts, event_file)
    engine = sa.create_engine(database)
    check_against_ground_truth(engine, event_file)
    engine.dispose()


def test_replay_equals_ground_truth_postgres(
    apache_kafka: Broker, event_file: EventFile, postgres_database: str, tmp_path: Path
) -> None:
    env = pipeline_env(apache_kafka, postgres_database)
    counts = run_replay(env, event_file, tmp_path)
    check_counts(counts, event_file)
    engine = sa.create_engine(postgres_database)
    check_against_ground_truth(engine, event_file)
    # A second replay on the same broker changes nothing: every event is a duplicate.
    again = run_replay(env, event_file, tmp_path)
    assert again["applied"] == 0
    check_against_ground_truth(engine, event_file)
    engine.dispose()
