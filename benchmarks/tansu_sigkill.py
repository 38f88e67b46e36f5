"""What a SIGKILL double-counts on the embedded Tansu broker (no transactions: at-least-once,
with offset-fenced state and event_id de-duplication). For each kill point: one worker process,
the ground-truth event file in 5 chunks, SIGKILL after a chunk, restart, drain; then the
aggregates against the pandas ground truth and the applied-events counter against the number
of distinct good events.

Run: PYTHONPATH=. .venv/bin/python benchmarks/tansu_sigkill.py [--users 2500]
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from pipelines.embedded_broker import EmbeddedBroker
from sinks.sql.store import counter_totals, cumulative_arms
from tests.conftest import Broker
from tests.pipeline.conftest import load_catalog, pipeline_env
from tests.pipeline.generate import CATALOG, generate
from tests.pipeline.ground_truth import STATS, ground_truth
from tests.pipeline.test_workers import chunks_of, produce, start_worker, stop, wait_flushed

KILL_POINTS = [(0, 0.2), (1, 0.7), (3, 1.3)]  # (after chunk, seconds later)
LOOKBACK = 14 * 86400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2500)
    args = parser.parse_args()
    event_file = generate(users=args.users, seed=11)
    truth = ground_truth(event_file.clean, event_file.catalog, LOOKBACK)
    unique = len({(e["user_id"], e["event_id"]) for e in event_file.clean})
    print(f"{len(event_file.lines)} events, {unique} distinct good ones; Tansu, one worker")
    with EmbeddedBroker() as embedded:
        broker = Broker("tansu", embedded.url, transactions=False)
        for after_chunk, delay in KILL_POINTS:
            workdir = Path(tempfile.mkdtemp(prefix="xpstream-sigkill-"))
            database = f"sqlite:///{workdir}/xp.db"
            env = pipeline_env(broker, database)
            load_catalog(env, CATALOG, workdir)
            worker = start_worker(env, workdir / "worker.log")
            engine = sa.create_engine(database)
            targets: dict[int, int] = {}
            try:
                time.sleep(5)
                for number, chunk in enumerate(chunks_of(event_file, 5)):
                    for partition, offset in produce(env, chunk).items():
                        targets[partition] = max(targets.get(partition, -1), offset)
                    if number == after_chunk:
                        time.sleep(delay)
                        stop(worker, signal.SIGKILL)
                        worker = start_worker(env, workdir / "worker.log")
                wait_flushed(engine, env, targets, timeout=300)
                time.sleep(2)  # one more flush after the last offset
                arms = cumulative_arms(engine)
                applied = sum(counter_totals(engine, "applied").values())
            finally:
                stop(worker)
                engine.dispose()
            cells = [(key, stat) for key in truth.index for stat in STATS]
            wrong = sum(
                1
                for key, stat in cells
                if abs(arms.get(key, {}).get(stat, 0.0) - truth.loc[key, stat])
                > 1e-6 + 1e-9 * abs(truth.loc[key, stat])
            )
            extra_users = sum(
                arms.get(key, {}).get("n", 0.0) - truth.loc[key, "n"] for key in truth.index
            )
            print(
                f"kill after chunk {after_chunk} + {delay}s: applied events {applied:.0f} "
                f"({applied - unique:+.0f} vs distinct), cells off the ground truth "
                f"{wrong}/{len(cells)}, n over all cells {extra_users:+.0f}"
            )


if __name__ == "__main__":
    main()
