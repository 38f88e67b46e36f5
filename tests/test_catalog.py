"""`xpstream catalog load`: valid catalogs are stored; invalid ones are refused whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
import yaml

from jobs.simulate import DEMO_CATALOG
from sinks.sql.store import load_catalog, make_engine

XPSTREAM = str(Path(sys.executable).with_name("xpstream"))


def load(path: Path, database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XPSTREAM, "catalog", "load", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XPSTREAM_DATABASE_URL": database, "COLUMNS": "200"},
    )


def test_valid_catalog_round_trips_through_the_database(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/x.db"
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(DEMO_CATALOG))
    result = load(path, database)
    assert result.returncode == 0, result.stderr
    engine = make_engine(database)
    stored = load_catalog(engine)
    engine.dispose()
    assert {e.key for e in stored.experiments} == {"checkout-lift", "aa-test", "risky-banner"}
    banner = stored.experiment("risky-banner")
    assert banner.guardrails[0].metric == "errors" and banner.guardrails[0].min_users == 500
    assert stored.metric("aov").numerator == "revenue"


def test_invalid_catalog_is_refused_with_field_paths_and_nothing_stored(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/x.db"
    broken = yaml.safe_load(yaml.safe_dump(DEMO_CATALOG))
    broken["experiments"][1]["metrics"] = ["revenue", "no-such-metric"]
    broken["experiments"][2]["guardrails"][0]["bad_direction"] = "sideways"
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = load(path, database)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "experiments.2.guardrails.0.bad_direction" in message
    engine = sa.create_engine(database)
    tables = sa.inspect(engine).get_table_names()
    if "experiments" in tables:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from experiments")).scalar_one() == 0
    engine.dispose()


def test_unknown_metric_reference_names_its_path(tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(DEMO_CATALOG))
    broken["experiments"][1]["metrics"] = ["revenue", "no-such-metric"]
    path = tmp_path / "catalog.json"
    path.write_text(__import__("json").dumps(broken))
    result = load(path, f"sqlite:///{tmp_path}/x.db")
    assert result.returncode != 0
    assert "experiments.1.metrics.1: unknown metric 'no-such-metric'" in " ".join(
        result.stderr.split()
    )
