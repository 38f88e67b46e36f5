"""Alembic's migrations build exactly the tables the models declare (every schema change comes
with a migration), on SQLite and on PostgreSQL 15."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import Base
from sinks.sql.store import catalog_version, make_engine


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_the_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/m.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_database")
    )
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert catalog_version(engine) == 1
    engine.dispose()


def test_flags_of_the_older_form_are_carried_over(tmp_path: Path) -> None:
    """A database written before flags had values: its flags become boolean flags whose
    default is true, with no rules (what they meant), and the catalog still loads."""
    from alembic import command
    from sqlalchemy import text

    from sinks.sql.migrate import alembic_config
    from sinks.sql.store import load_catalog

    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(alembic_config(url), "0006")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO flags (key, enabled, rollout) VALUES ('old', 1, 0.3)"))
        conn.execute(text("INSERT INTO flags (key, enabled, rollout) VALUES ('off', 0, 1.0)"))
    upgrade_to_head(url)
    flags = {flag.key: flag for flag in load_catalog(engine).flags}
    assert (flags["old"].type, flags["old"].default, flags["old"].rules) == ("boolean", True, ())
    assert flags["off"].enabled is False and flags["off"].default is True
    engine.dispose()


def test_totals_are_filled_from_the_window_rows_of_an_older_database(tmp_path: Path) -> None:
    """A database written before totals were kept: 0009 sums its window rows per partition,
    and the analyzer reads the same statistics as the windows gave it before."""
    from alembic import command
    from sqlalchemy import text

    from sinks.sql.migrate import alembic_config
    from sinks.sql.store import cumulative_arms

    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(alembic_config(url), "0008")
    engine = make_engine(url)
    rows = [  # (window_start, partition, n, sum, source_offset)
        (0, 0, 10.0, 4.5, 7),
        (3600, 0, 5.0, 1.25, 9),
        (0, 1, 3.0, 3.0, 2),
    ]
    with engine.begin() as conn:
        for window_start, partition, n, total, offset in rows:
            conn.execute(
                text(
                    "INSERT INTO window_aggregates (experiment, variant, metric, window_start, "
                    "partition, n, sum, sum_sq, x_sum, x_sum_sq, xy_sum, den_sum, den_sum_sq, "
                    "num_den_sum, source_offset) VALUES ('e', 'a', 'm', :w, :p, :n, :s, :s, "
                    "0, 0, 0, 0, 0, 0, :o)"
                ),
                {"w": window_start, "p": partition, "n": n, "s": total, "o": offset},
            )
    upgrade_to_head(url)
    with engine.connect() as conn:
        totals = conn.execute(
            text(
                "SELECT partition, n, sum, source_offset FROM cumulative_aggregates "
                "ORDER BY partition"
            )
        ).all()
    assert [tuple(t) for t in totals] == [(0, 15.0, 5.75, 9), (1, 3.0, 3.0, 2)]
    assert cumulative_arms(engine)[("e", "a", "m")]["n"] == 18.0
    engine.dispose()
