"""Separate worker processes on Apache Kafka with exactly-once: a second worker joining the
group mid-stream, and SIGKILL + restart at several points. Totals must equal the pandas ground
truth exactly. (Tansu has no transactions: benchmarks/tansu_sigkill.py measures what a SIGKILL
double-counts there.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from config.settings import Settings
from jobs.replay import produce_lines
from pipelines.topics import Topics
from sinks.sql.store import flushed_offsets
from tests.conftest import STATE_DIR, Broker
from tests.pipeline.conftest import XPSTREAM, load_catalog, pipeline_env
from tests.pipeline.generate import CATALOG, EventFile, generate
from tests.pipeline.test_ground_truth import check_against_ground_truth


@pytest.fixture(scope="module")
def small_file() -> EventFile:
    return generate(users=2500, seed=11)


def start_worker(env: dict[str, str], log: Path, only: str = "workers") -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [XPSTREAM, "run", "--only", only],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def produce(env: dict[str, str], lines: list[bytes]) -> dict[int, int]:
    settings = Settings(namespace=env["XPSTREAM_NAMESPACE"], partitions=4)
    return asyncio.run(produce_lines(settings, env["XPSTREAM_KAFKA_URL"], lines))


def wait_flushed(
    engine: sa.Engine, env: dict[str, str], targets: dict[int, int], timeout: float = 180
) -> None:
    topic = Topics.of(env["XPSTREAM_NAMESPACE"]).events
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flushed = flushed_offsets(engine, topic)
        if all(flushed.get(p, -1) >= last for p, last in targets.items()):
            return
        time.sleep(0.25)
    raise AssertionError(f"not flushed in time: {flushed_offsets(engine, topic)} < {targets}")


def chunks_of(event_file: EventFile, count: int) -> list[list[bytes]]:
    """Contiguous chunks keep arrival order = file order, which the ground truth follows."""
    lines = [line.encode() for line in event_file.lines]
    size = len(lines) // count + 1
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def prepare(broker: Broker, workdir: Path) -> tuple[dict[str, str], sa.Engine]:
    """A fresh SQLite database with the test catalog, and the workers' environment for it."""
    database = f"sqlite:///{workdir}/xp.db"
    env = pipeline_env(broker, database, XPSTREAM_LOG_LEVEL="INFO")  # rebalances, for failures
    load_catalog(env, CATALOG, workdir)
    return env, sa.create_engine(database)


def test_a_second_worker_joining_mid_stream_gives_the_same_totals(
    apache_kafka: Broker, small_file: EventFile, tmp_path: Path
) -> None:
    """The join moves partitions, with their state, from the first worker to the second."""
    env, engine = prepare(apache_kafka, tmp_path)
    workers = [start_worker(env, tmp_path / "worker0.log")]
    targets: dict[int, int] = {}
    try:
        time.sleep(5)
        for number, chunk in enumerate(chunks_of(small_file, 4)):
            for partition, offset in produce(env, chunk).items():
                targets[partition] = max(targets.get(partition, -1), offset)
            if number == 1:
                wait_flushed(engine, env, targets)  # the first worker holds state to hand over
                workers.append(start_worker(env, tmp_path / "worker1.log"))
                time.sleep(4)  # the rebalance is under way while the next chunks arrive
        wait_flushed(engine, env, targets)
        assert all(w.poll() is None for w in workers), "a worker died"
        check_against_ground_truth(engine, small_file)
    finally:
        for worker in workers:
            stop(worker)
        engine.dispose()


KILL_POINTS = {  # name → (after which of 5 chunks, seconds later)
    "early-mid-envelope": (0, 0.2),
    "between-commits": (1, 0.7),
    "late-after-a-commit": (3, 1.3),
}


def run_with_a_sigkill(
    env: dict[str, str],
    event_file: EventFile,
    log: Path,
    engine: sa.Engine,
    kill_after_chunks: int,
    delay: float,
) -> None:
    """One worker; the file in 5 chunks; SIGKILL and a restart after one of them; returns
    once every offset is flushed."""
    worker = start_worker(env, log)
    targets: dict[int, int] = {}
    try:
        time.sleep(5)
        for number, chunk in enumerate(chunks_of(event_file, 5)):
            for partition, offset in produce(env, chunk).items():
                targets[partition] = max(targets.get(partition, -1), offset)
            if number == kill_after_chunks:
                time.sleep(delay)  # mid-processing, between flushes and commits
                stop(worker, signal.SIGKILL)
                worker = start_worker(env, log)
        wait_flushed(engine, env, targets, timeout=240)
        time.sleep(2)  # one more flush interval after the last offset
    finally:
        stop(worker)


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_sigkill_and_restart_is_exact(
    apache_kafka: Broker, small_file: EventFile, tmp_path: Path, kill_point: str
) -> None:
    env, engine = prepare(apache_kafka, tmp_path)
    try:
        run_with_a_sigkill(
            env, small_file, tmp_path / "worker.log", engine, *KILL_POINTS[kill_point]
        )
        check_against_ground_truth(engine, small_file)
        # `xpstream run` keeps user states in RocksDB, a database per partition.
        stores = STATE_DIR / env["XPSTREAM_NAMESPACE"]
        assert sorted(p.name for p in stores.iterdir()) == [f"users-{p}" for p in range(4)]
    finally:
        engine.dispose()
