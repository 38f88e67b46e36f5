"""Staged rollouts guarded by metrics: false rollbacks of A/A rollouts, users exposed to a
regression before its rollback, and the seconds from a breach becoming detectable in SQL to the
SDK payload serving the old value.

Run: PYTHONPATH=. .venv/bin/python benchmarks/rollout_guard.py [--sims N] [--skip-e2e]
(a) and (b) are seeded simulations through `stats` (no broker) of a schedule 1 → 5 → 10 → 25 →
50 → 100% with metric triggers, a step of 20,000 arriving users per look; both rules see the
same streams: the always-valid interval the analyzer uses, and a fixed-horizon 95% interval
peeked at each look (what a rule without a sequential test does).
(c) runs the analyzer loop and the API (uvicorn) on SQLite: stage statistics that breach are
committed, and the SDK payload endpoint is polled until the rollout's rule is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.guardrails import guardrail_status
from stats.sufficient import ArmStats

ALPHA, TAU = 0.05, 0.05
STAGES = [0.01, 0.05, 0.10, 0.25, 0.50]
USERS_PER_STEP, MIN_USERS, BASE_ERRORS = 20_000, 150, 0.6


def walk(
    sims: int, factor: float, seed: int
) -> dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Per rule: the stage index at rollback (inf: released) and the users served the new
    value before the rollback (or up to the release)."""
    rng = np.random.default_rng(seed)
    options = AnalysisOptions(ALPHA, TAU, "none")
    out = {}
    for rule in ("xpstream", "naive"):
        stage = np.zeros(sims, dtype=int)
        done = np.zeros(sims, bool)  # rolled back or released
        rolled_at = np.full(sims, np.inf)
        exposed_on = np.zeros(sims)
        n = {arm: np.zeros(sims) for arm in ("off", "on")}
        s1 = {arm: np.zeros(sims) for arm in ("off", "on")}
        s2 = {arm: np.zeros(sims) for arm in ("off", "on")}
        previous_p = np.full(sims, np.nan)
        while not done.all():
            p = np.array(STAGES)[np.minimum(stage, len(STAGES) - 1)]
            live = ~done
            for arm, rate in (("off", BASE_ERRORS), ("on", BASE_ERRORS * factor)):
                arrived = np.where(live, rng.binomial(USERS_PER_STEP, p), 0)
                counts = rng.poisson(rate, int(arrived.sum()))
                owner = np.repeat(np.arange(sims), arrived)
                n[arm] += arrived
                s1[arm] += np.bincount(owner, weights=counts, minlength=sims)
                s2[arm] += np.bincount(owner, weights=counts.astype(float) ** 2, minlength=sims)
                if arm == "on":
                    exposed_on += arrived
            control = ArmStats.of(n["off"], s1["off"], s2["off"])
            variant = ArmStats.of(n["on"], s1["on"], s2["on"])
            zeros = np.zeros(sims, bool)
            with np.errstate(all="ignore"):
                result = analyze(
                    ComparisonBatch(control, variant, zeros, zeros, np.arange(sims), previous_p),
                    options,
                )
            previous_p = result.sequential_p_value
            enough = np.minimum(n["off"], n["on"]) >= MIN_USERS
            if rule == "xpstream":
                status = guardrail_status(
                    result.sequential_rel_ci_low,
                    result.sequential_rel_ci_high,
                    n["off"],
                    n["on"],
                    np.zeros(sims),
                    np.ones(sims, bool),
                    np.full(sims, float(MIN_USERS)),
                )
                breached = status == "breached"
            else:
                breached = enough & (result.rel_ci_low > 0)
            newly = live & breached
            rolled_at = np.where(newly, stage, rolled_at)
            done |= newly
            advance = live & ~breached & enough  # one step per stage at least, then min_users
            stage = np.where(advance, stage + 1, stage)
            done |= stage >= len(STAGES)  # the stage after 50% is the release
        out[rule] = (rolled_at, exposed_on)
    return out


def simulations(sims: int) -> None:
    aa = walk(sims, 1.0, seed=1)
    bad = walk(sims, 1.3, seed=2)
    print(
        f"(a) {sims} A/A rollouts, 1→5→10→25→50→100%, {USERS_PER_STEP:,} users a step, "
        f"min {MIN_USERS} users per arm, α={ALPHA}"
    )
    labels = {
        "xpstream": "always-valid interval (ours)",
        "naive": "fixed-horizon 95% interval, peeked at",
    }
    for rule, label in labels.items():
        rate = np.isfinite(aa[rule][0]).mean()
        print(f"    {label:<40} false rollbacks {rate:6.2%}")
    print(f"(b) {sims} rollouts whose new value raises errors by 30%")
    for rule, label in labels.items():
        stage, exposed = bad[rule]
        caught = np.isfinite(stage)
        at = [f"{STAGES[k]:.0%}: {(stage == k).mean():.1%}" for k in range(len(STAGES))]
        print(
            f"    {label:<40} rolled back {caught.mean():6.1%}; at stage {', '.join(at)}; "
            f"users served the regression: median {np.median(exposed):,.0f}, "
            f"p95 {np.percentile(exposed, 95):,.0f}"
        )


def end_to_end(interval: float, phase: float) -> None:
    """``phase``: where between two analyzer looks the breach is committed (0..1)."""
    import uvicorn

    from api.app import create_app
    from config.catalog import parse_catalog
    from config.rollouts import RolloutIn
    from config.settings import Settings
    from jobs.analyzer import run_analyzer
    from pipelines.embedded_broker import HOST, free_port
    from sinks.sql.keys import create_api_key
    from sinks.sql.migrate import upgrade_to_head
    from sinks.sql.rollouts import create_rollout
    from sinks.sql.store import flush_partition_state, make_engine, save_catalog
    from stats.sufficient import STATISTICS

    workdir = Path(tempfile.mkdtemp(prefix="xpstream-rollout-"))
    url = f"sqlite:///{workdir}/rollout.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(
        engine,
        parse_catalog(
            {
                "metrics": [{"key": "errors", "kind": "count", "higher_is_better": False}],
                "flags": [{"key": "checkout-v2", "type": "string", "default": "v1"}],
            }
        ),
    )
    from sqlalchemy.orm import Session

    rollout = RolloutIn.model_validate(
        {
            "flag": "checkout-v2",
            "value": "v2",
            "stages": [{"percent": 5}, {"percent": 100}],
            "guardrails": [{"metric": "errors", "bad_direction": "increase"}],
        }
    )
    with Session(engine) as session, session.begin():
        experiment = create_rollout(session, rollout, "bench", datetime.now(UTC)).experiment
    client_key = create_api_key(engine, "client", "bench")
    settings = Settings(database_url=url, namespace="bench", analysis_interval_seconds=interval)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, engine, f"{HOST}:{free_port()}"),
            host=HOST,
            port=port,
            log_level="warning",
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    analyzer = threading.Thread(
        target=loop.run_until_complete,
        args=(run_analyzer(engine, ALPHA, TAU, interval, stop),),
        daemon=True,
    )
    analyzer.start()
    payload_url = f"http://{HOST}:{port}/api/features/{client_key}"

    def rule_served() -> bool:
        features = httpx.get(payload_url, timeout=10).json()["features"]
        return any(r.get("key") == experiment for r in features["checkout-v2"]["rules"])

    assert rule_served()
    time.sleep(interval * phase)
    rng = np.random.default_rng(3)
    rows = []
    for arm, rate in (("off", 0.6), ("on", 0.9)):
        errors = rng.poisson(rate, 3000).astype(float)
        sums = dict.fromkeys(STATISTICS, 0.0) | {
            "n": 3000.0,
            "sum": float(errors.sum()),
            "sum_sq": float((errors**2).sum()),
        }
        rows.append(
            {"experiment": experiment, "variant": arm, "metric": "errors", "window_start": 0}
            | {"partition": 0, "source_offset": 0}
            | sums
        )
    totals = [{k: v for k, v in row.items() if k != "window_start"} for row in rows]
    flush_partition_state(engine, rows, [], [], totals=totals)  # the breach is now detectable
    detectable = time.monotonic()
    while rule_served():
        time.sleep(0.02)
    latency = time.monotonic() - detectable
    loop.call_soon_threadsafe(stop.set)
    analyzer.join(timeout=30)
    server.should_exit = True
    engine.dispose()
    print(
        f"(c) analysis every {interval:g}s, breach committed {phase:.0%} into an interval: "
        f"detectable in SQL → SDK payload without the new value {latency:.2f}s "
        f"(target ≤ {2 * interval + 2:g}s: two intervals + 2s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    simulations(args.sims)
    print(f"    (simulations took {time.monotonic() - started:.1f}s)")
    if not args.skip_e2e:
        for phase in (0.1, 0.5, 0.9):
            end_to_end(args.interval, phase)


if __name__ == "__main__":
    main()
