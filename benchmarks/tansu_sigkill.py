"""What a SIGKILL double-counts on the embedded Tansu broker (no transactions: at-least-once,
with offset-fenced state and event_id de-duplication). For each kill point: one worker process,
the ground-truth event file in 5 chunks, SIGKILL after a chunk, restart, drain; then the
aggregates against the pandas ground truth and the applied-events counter against the number
of distinct good events.

Run: PYTHONPATH=. .venv/bin/python benchmarks/tansu_sigkill.py [--users 2500]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipelines.embedded_broker import EmbeddedBroker
from sinks.sql.store import counter_totals, cumulative_arms
from tests.conftest import Broker
from tests.pipeline.generate import generate
from tests.pipeline.ground_truth import STATS, ground_truth
from tests.pipeline.test_workers import KILL_POINTS, prepare, run_with_a_sigkill

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
        for kill_point, (after_chunk, delay) in KILL_POINTS.items():
            workdir = Path(tempfile.mkdtemp(prefix="xpstream-sigkill-"))
            env, engine = prepare(broker, workdir)
            try:
                run_with_a_sigkill(
                    env, event_file, workdir / "worker.log", engine, after_chunk, delay
                )
                arms = cumulative_arms(engine)
                applied = sum(counter_totals(engine, "applied").values())
            finally:
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
                f"{kill_point} (after chunk {after_chunk} + {delay}s): applied {applied:.0f} "
                f"({applied - unique:+.0f} vs distinct), cells off the ground truth "
                f"{wrong}/{len(cells)}, n over all cells {extra_users:+.0f}"
            )


if __name__ == "__main__":
    main()
