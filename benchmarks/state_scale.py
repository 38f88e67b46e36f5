"""User state at scale: N users (default 1,000,000) through `xpstream run --only workers` on
Apache Kafka with exactly-once, the memory store beside the RocksDB store in the same run.
For each store: events/s (flushed to SQL, from the first flush to the last), the worker's peak
and final RSS, then a SIGKILL, a few more events and a restart: seconds from the restart to
the first flush of a new event (the memory store re-reads its whole users changelog first),
and the restarted worker's RSS (what it holds to serve every user).

Run: PYTHONPATH=. .venv/bin/python benchmarks/state_scale.py [--users 1000000]
Users arrive over a day, each with an exposure and a metric event a minute later (so a user's
state is read again while the worker may still hold it in memory, as in live traffic); in
envelopes of 500.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import Engine

from benchmarks.pipeline_throughput import PARTITIONS, events_per_envelope, produce
from config.settings import Settings
from jobs.simulate import demo_catalog, recent_start
from pipelines.topics import Topics, ensure_topics
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import flushed_offsets, make_engine, save_catalog
from stats.assignment import assign

ENVELOPE = 500


def user_events(users: int, seed: int = 7) -> list[bytes]:
    """Users arriving over a day (one every 86 ms), each exposed to one of the demo's
    experiments and doing a metric event a minute later; in time order."""
    rng = random.Random(seed)
    experiments = list(demo_catalog().experiments)
    start = recent_start(1.5)
    spacing = 86400.0 / users
    events = []
    for number in range(users):
        user = f"user-{number}"
        experiment = experiments[number % len(experiments)]
        index = assign(user, experiment.hashing_seed, [v.weight for v in experiment.variants])
        ts = start + number * spacing
        events.append(
            (
                ts,
                {
                    "user_id": user,
                    "ts": ts,
                    "event_id": f"x{number}",
                    "type": "exposure",
                    "experiment": experiment.key,
                    "variant": experiment.variants[index].key,
                },
            )
        )
        events.append(
            (
                ts + 60.0,
                {
                    "user_id": user,
                    "ts": ts + 60.0,
                    "event_id": f"m{number}",
                    "type": "metric",
                    "metric": "revenue",
                    "value": round(rng.uniform(1, 100), 2),
                },
            )
        )
    events.sort(key=lambda pair: pair[0])
    return [orjson.dumps(event) for _, event in events]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


@dataclass
class Figures:
    events_per_second: float
    peak_rss_mib: float
    final_rss_mib: float
    restart_seconds: float
    restarted_rss_mib: float


def wait_flushed(
    engine: Engine, topic: str, targets: dict[int, int], timeout: float, any_one: bool = False
) -> float:
    """When every (or ``any_one``) partition's flushed offset reaches its target."""
    deadline = time.monotonic() + timeout
    reached = any if any_one else all
    while time.monotonic() < deadline:
        flushed = flushed_offsets(engine, topic)
        if reached(flushed.get(p, -1) >= last for p, last in targets.items()):
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(f"not flushed: {flushed_offsets(engine, topic)} < {targets}")


async def measure(bootstrap: str, store: str, lines: list[bytes], workdir: Path) -> Figures:
    database = f"sqlite:///{workdir}/{store}.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, demo_catalog())
    settings = Settings(
        namespace=f"scale{uuid.uuid4().hex[:6]}",
        partitions=PARTITIONS,
        database_url=database,
        flush_seconds=1.0,
    )
    topic = Topics.of(settings.namespace).events
    await ensure_topics(bootstrap, Topics.of(settings.namespace).layout(PARTITIONS))
    targets = await produce(bootstrap, topic, lines, ENVELOPE)
    sizes = events_per_envelope(lines, ENVELOPE)
    env = {
        **os.environ,
        "XPSTREAM_KAFKA_URL": bootstrap,
        "XPSTREAM_NAMESPACE": settings.namespace,
        "XPSTREAM_DATABASE_URL": database,
        "XPSTREAM_PARTITIONS": str(PARTITIONS),
        "XPSTREAM_FLUSH_SECONDS": "1.0",
        "XPSTREAM_STATE_STORE": store,
        "XPSTREAM_DATA_DIR": str(workdir / "state"),
        "XPSTREAM_LOG_LEVEL": "INFO",
    }
    log = (workdir / f"{store}.log").open("ab")
    command = [str(Path(sys.executable).with_name("xpstream")), "run", "--only", "workers"]
    worker = subprocess.Popen(command, env=env, stderr=log, stdout=log)
    try:
        started: tuple[float, int] | None = None
        while started is None:
            flushed = flushed_offsets(engine, topic)
            if flushed:
                done = sum(sum(sizes[p][: offset + 1]) for p, offset in flushed.items())
                started = (time.perf_counter(), done)
            time.sleep(0.05)
        finished = wait_flushed(engine, topic, targets, 3600)
        rate = (len(lines) - started[1]) / (finished - started[0])
        time.sleep(3)  # commits and a flush: the RocksDB store's checkpoint is written
        rss = memory_kib(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        # A few more events for users the worker already holds, then the restart.
        await produce(bootstrap, topic, lines[-ENVELOPE * PARTITIONS :], ENVELOPE)
        restarted = time.perf_counter()
        worker = subprocess.Popen(command, env=env, stderr=log, stdout=log)
        news = {p: offset + 1 for p, offset in targets.items()}
        first = wait_flushed(engine, topic, news, 3600, any_one=True)
        time.sleep(2)
        again = memory_kib(worker.pid)["VmRSS"] / 1024  # what the restarted worker holds
        return Figures(rate, rss["VmHWM"] / 1024, rss["VmRSS"] / 1024, first - restarted, again)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        engine.dispose()


async def main_async(users: int, bootstrap: str) -> None:
    lines = user_events(users)
    print(
        f"{users:,} users, {len(lines):,} events in envelopes of {ENVELOPE}, {PARTITIONS} "
        "partitions, one `xpstream run --only workers`, exactly-once on Apache Kafka"
    )
    workdir = Path(tempfile.mkdtemp(prefix="xpstream-state-scale-"))
    figures = {
        store: await measure(bootstrap, store, lines, workdir) for store in ("memory", "rocksdb")
    }
    for store, f in figures.items():
        print(
            f"  {store:8} {f.events_per_second:9,.0f} events/s; worker RSS peak "
            f"{f.peak_rss_mib:6,.0f} MiB, at the end {f.final_rss_mib:6,.0f} MiB; restart after "
            f"SIGKILL to the first new event flushed {f.restart_seconds:5.1f} s, RSS then "
            f"{f.restarted_rss_mib:6,.0f} MiB"
        )
    memory, rocks = figures["memory"], figures["rocksdb"]
    print(
        f"  rocksdb/memory: events/s {rocks.events_per_second / memory.events_per_second:.2f}×, "
        f"peak RSS {rocks.peak_rss_mib / memory.peak_rss_mib:.2f}×, "
        f"restart {rocks.restart_seconds / memory.restart_seconds:.2f}×, RSS after the restart "
        f"{rocks.restarted_rss_mib / memory.restarted_rss_mib:.2f}×"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    from tests.services.apache_kafka import ApacheKafka

    kafka = ApacheKafka().start()
    try:
        asyncio.run(main_async(args.users, kafka.bootstrap))
    finally:
        kafka.stop()


if __name__ == "__main__":
    main()
