"""Alembic upgrade to head, programmatically (``xpstream migrate``, test fixtures)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from sinks.outage import Outage
from sinks.sql.store import make_engine, unavailable

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


@contextmanager
def migrated_engine(database_url: str, wait: bool = False) -> Iterator[Engine]:
    """The database upgraded to head and an engine on it, disposed at the end: the set-up of
    every command that uses the database. With ``wait`` (the long-running jobs), a database
    that cannot be reached is waited for, with backoff, instead of failing the start."""
    outage = Outage("database at start-up", 0.5, cap=5.0)
    while True:
        try:
            upgrade_to_head(database_url)
            break
        except Exception as error:
            if not (wait and unavailable(error)):
                raise
            outage.failed(error)
            time.sleep(max(0.0, outage.retry_at - time.monotonic()))
    outage.recovered()
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()
