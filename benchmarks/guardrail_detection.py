"""Guardrail rollback: false rollbacks under A/A, detection speed under a regression, and the
end-to-end latency from a breach becoming detectable to its alert on Kafka.

Run: PYTHONPATH=. .venv/bin/python benchmarks/guardrail_detection.py [--sims N] [--skip-e2e]
(a) and (b) are seeded simulations through `stats` (no broker); every rule sees the same streams.
(c) runs the demo's traffic through the embedded broker with the analyzer and publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.guardrails import guardrail_status
from stats.sufficient import ArmStats, FloatArray

ALPHA, TAU, MIN_USERS, N_STAR = 0.05, 0.05, 500, 5000.0


def growthbook_halfwidth(variance: FloatArray, n_total: FloatArray, alpha: float) -> FloatArray:
    """GrowthBook's sequential interval (gbstats SequentialTwoSidedTTest): the asymptotic
    confidence sequence of Howard et al. 2021 (normal mixture), tuned at N* = 5,000."""
    rho_sq = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / N_STAR
    s_sq = variance * n_total  # per-observation variance of the estimate
    return np.sqrt(
        s_sq
        * 2
        * (n_total * rho_sq + 1)
        / (n_total**2 * rho_sq)
        * np.log(np.sqrt(n_total * rho_sq + 1) / alpha)
    )


def simulate_looks(
    sims: int, rate_c: float, rate_t: float, step: int, max_per_arm: int, seed: int
) -> dict[str, FloatArray]:
    """For each rule, the users per arm at the first look that would roll back (inf: never)."""
    rng = np.random.default_rng(seed)
    looks = max_per_arm // step
    first = {name: np.full(sims, np.inf) for name in ("xpstream", "growthbook", "naive")}
    conv_c, conv_t = np.zeros(sims), np.zeros(sims)
    previous_p = np.full(sims, np.nan)
    options = AnalysisOptions(ALPHA, TAU, "none")
    for look in range(1, looks + 1):
        conv_c += rng.binomial(step, rate_c, sims)
        conv_t += rng.binomial(step, rate_t, sims)
        n = np.full(sims, float(look * step))
        control, variant = ArmStats.of(n, conv_c, conv_c), ArmStats.of(n, conv_t, conv_t)
        batch = ComparisonBatch(
            control,
            variant,
            np.zeros(sims, bool),
            np.zeros(sims, bool),
            np.arange(sims),
            previous_p,
        )
        result = analyze(batch, options)
        previous_p = result.sequential_p_value
        ours = guardrail_status(
            result.sequential_rel_ci_low,
            result.sequential_rel_ci_high,
            n,
            n,
            np.zeros(sims),
            np.ones(sims, bool),
            np.full(sims, float(MIN_USERS)),
        )
        half = growthbook_halfwidth(result.rel_variance, 2 * n, ALPHA)
        enough = n >= MIN_USERS
        decisions = {
            "xpstream": ours == "breached",
            "growthbook": enough & (result.rel_effect - half > 0),
            "naive": enough & (result.rel_ci_low > 0),  # a fixed-horizon interval, peeked at
        }
        for name, breached in decisions.items():
            first[name] = np.where(np.isinf(first[name]) & breached, n, first[name])
    return first


def false_rollbacks(sims: int) -> None:
    first = simulate_looks(sims, 0.05, 0.05, step=250, max_per_arm=20_000, seed=1)
    print(f"(a) {sims} A/A experiments, a look every 250 users per arm up to 20k (80 looks)")
    for name, label in (
        ("xpstream", "mSPRT always-valid interval (ours)"),
        ("growthbook", "GrowthBook confidence sequence, N*=5000"),
        ("naive", "fixed-horizon 95% interval, peeked at"),
    ):
        rate = np.isfinite(first[name]).mean()
        print(f"    {label:<42} false rollbacks {rate:6.2%}")


def detection(sims: int) -> None:
    first = simulate_looks(sims, 0.05, 0.055, step=1000, max_per_arm=300_000, seed=2)
    print(f"(b) {sims} experiments, conversion guardrail 5% → 5.5% (+10%), a look per 1k users")
    medians = {}
    for name, label in (
        ("xpstream", "mSPRT always-valid interval (ours)"),
        ("growthbook", "GrowthBook confidence sequence, N*=5000"),
    ):
        detected = first[name][np.isfinite(first[name])]
        medians[name] = float(np.median(first[name]))
        print(
            f"    {label:<42} users/arm to rollback: median {medians[name]:>7,.0f}, "
            f"mean {np.mean(detected):>7,.0f}; detected by 300k: {detected.size / sims:6.1%}"
        )
    ours, theirs = first["xpstream"], first["growthbook"]
    print(
        f"    median ratio growthbook/ours {medians['growthbook'] / medians['xpstream']:.2f}×; "
        f"ours earlier in {(ours < theirs).mean():.1%} of streams, later in "
        f"{(ours > theirs).mean():.1%}"
    )


async def end_to_end(users: int) -> None:
    from config.settings import Settings
    from jobs.replay import produce_lines, wait_until_flushed
    from jobs.report import build_report
    from jobs.run import analyzer_and_publisher
    from jobs.simulate import DEMO_EFFECTS, Traffic, demo_catalog, recent_start, simulate
    from pipelines.embedded_broker import EmbeddedBroker
    from pipelines.topics import Topics, ensure_topics
    from pipelines.worker import build_pipeline
    from sinks.sql.migrate import upgrade_to_head
    from sinks.sql.store import make_engine, save_catalog

    workdir = Path(tempfile.mkdtemp(prefix="xpstream-bench-"))
    url = f"sqlite:///{workdir}/bench.db"
    settings = Settings(database_url=url, kafka_flavor="tansu", namespace="bench")
    upgrade_to_head(url)
    engine = make_engine(url)
    catalog = demo_catalog()
    save_catalog(engine, catalog)
    traffic = Traffic(users=users, start_ts=recent_start())
    lines = [orjson.dumps(e) for e in simulate(catalog, traffic, DEMO_EFFECTS)]
    topics = Topics.of(settings.namespace)
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        await ensure_topics(broker.url, topics.layout(settings.partitions))
        pipeline = build_pipeline(settings, broker.url, engine)
        await pipeline.app.start()
        stop = asyncio.Event()
        analysis = asyncio.create_task(
            analyzer_and_publisher(settings, broker.url, engine, stop, "all")
        )
        detectable: list[float] = []
        arrived: list[float] = []

        async def probe() -> None:  # a read-only look every 0.1 s: when could a breach be seen?
            while not detectable:
                report = await asyncio.to_thread(
                    build_report, engine, catalog, "risky-banner", settings.alpha, settings.tau
                )
                if any(g["status"] == "breached" for g in report["guardrails"]):
                    detectable.append(time.monotonic())
                await asyncio.sleep(0.1)

        async def consume() -> None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                topics.alerts, bootstrap_servers=broker.url, auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                while not arrived:
                    if await consumer.getmany(timeout_ms=50):
                        arrived.append(time.monotonic())
            finally:
                await consumer.stop()

        watchers = [asyncio.create_task(probe()), asyncio.create_task(consume())]
        targets = await produce_lines(settings, broker.url, lines)
        await wait_until_flushed(engine, topics.events, targets, timeout=600)
        await asyncio.wait_for(asyncio.gather(*watchers), 60)
        stop.set()
        await analysis
        await pipeline.app.stop()
    engine.dispose()
    latency = arrived[0] - detectable[0]
    interval = settings.analysis_interval_seconds
    print(
        f"(c) end to end, {users} users on the embedded broker, analysis every {interval:g}s: "
        f"breach detectable → alert consumed from Kafka {latency:.2f}s "
        f"({latency / interval:.2f} analysis intervals)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    false_rollbacks(args.sims)
    detection(args.sims)
    print(f"    (simulations took {time.monotonic() - started:.1f}s)")
    if not args.skip_e2e:
        asyncio.run(end_to_end(args.users))


if __name__ == "__main__":
    main()
