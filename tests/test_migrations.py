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
