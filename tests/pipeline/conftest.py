"""Fixtures for pipeline tests: a fresh database and an isolated namespace per test."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import STATE_DIR, Broker

XPSTREAM = str(Path(sys.executable).with_name("xpstream"))


def pipeline_env(broker: Broker, database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "XPSTREAM_KAFKA_URL": broker.bootstrap,
        "XPSTREAM_KAFKA_FLAVOR": "apache" if broker.transactions else "tansu",
        "XPSTREAM_NAMESPACE": f"t{uuid.uuid4().hex[:10]}",
        "XPSTREAM_DATABASE_URL": database_url,
        "XPSTREAM_PARTITIONS": "4",
        "XPSTREAM_FLUSH_SECONDS": "0.5",
        "XPSTREAM_DATA_DIR": str(STATE_DIR),
        "COLUMNS": "200",
        **extra,
    }


def xpstream(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XPSTREAM, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def load_catalog(env: dict[str, str], catalog: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    result = xpstream(env, "catalog", "load", str(path))
    assert result.returncode == 0, result.stderr
