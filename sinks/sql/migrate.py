"""Alembic upgrade to head, programmatically (``xpstream migrate``, test fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from sinks.sql.store import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


@contextmanager
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """The database upgraded to head and an engine on it, disposed at the end: the set-up of
    every command that uses the database."""
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()
