"""A rollout schedule walked through the real pipeline on simulated traffic and a moved clock:
each step, new users arrive and those in the stage's comparison are exposed (as the SDK's
tracking callback reports them) and emit ``errors`` — more of them in ``on`` when the new value
regresses; then the pipeline flushes, the analyzer looks, alerts are published and the
scheduler ticks, all at the step's simulated time. The demo, the rollout tests and
``benchmarks/rollout_guard.py`` walk schedules this way."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from config.catalog import Experiment
from config.rollouts import ON
from config.settings import Settings
from jobs.analyzer import analyze_once
from jobs.replay import produce_lines, wait_until_flushed
from jobs.scheduler import schedule_once
from jobs.simulate import poisson
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import Pipeline, build_pipeline
from sinks.alert_publisher import AlertPublisher
from sinks.sql.models import RolloutRow
from sinks.sql.store import load_effective_catalog
from stats.analysis import AnalysisOptions
from stats.assignment import assign


@dataclass(frozen=True)
class Walk:
    """The traffic of a walk: ``users_per_step`` new users every ``step`` of simulated time;
    ``errors_factor`` multiplies the ``errors`` rate of users served the new value."""

    users_per_step: int
    step: timedelta
    max_steps: int
    errors_factor: float = 1.0
    base_errors: float = 0.6
    seed: int = 7


@dataclass
class Step:
    number: int
    at: datetime
    stage: int  # the stage the step's traffic saw
    percent: float
    exposed: dict[str, int]  # arm → users exposed this step
    state: str  # the schedule's state after the step's look and tick
    alerts: list[dict[str, Any]] = field(default_factory=list)


def stage_events(
    experiment: Experiment, walk: Walk, first_user: int, start_ts: float, rng: random.Random
) -> tuple[list[bytes], dict[str, int]]:
    """The step's events: users hashed as the SDKs hash them; only users in the comparison
    are exposed (the rest keep the old value, outside it)."""
    weights = [v.weight for v in experiment.variants]
    seconds = walk.step.total_seconds()
    lines: list[bytes] = []
    exposed = {v.key: 0 for v in experiment.variants}
    for number in range(first_user, first_user + walk.users_per_step):
        user = f"walker-{walk.seed}-{number}"
        index = assign(
            user, experiment.hashing_seed, weights, experiment.coverage, experiment.hash_version
        )
        if index < 0:
            continue
        arm = experiment.variants[index].key
        exposed[arm] += 1
        seen = start_ts + rng.uniform(0, seconds * 0.5)
        events: list[dict[str, Any]] = [
            {
                "type": "exposure",
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "ts": seen,
                "user_id": user,
                "experiment": experiment.key,
                "variant": arm,
            }
        ]
        rate = walk.base_errors * (walk.errors_factor if arm == ON else 1.0)
        events += [
            {
                "type": "metric",
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "ts": seen + rng.uniform(1, seconds * 0.5),
                "user_id": user,
                "metric": "errors",
                "value": 1,
            }
            for _ in range(poisson(rng, rate))
        ]
        lines += [orjson.dumps(e) for e in events]
    return lines, exposed


async def walk_rollout(
    settings: Settings,
    bootstrap: str,
    engine: Engine,
    rollout_id: int,
    start: datetime,
    walk: Walk,
    pipeline: Pipeline | None = None,
) -> list[Step]:
    """Steps until the schedule is released or rolled back, or ``walk.max_steps`` pass, through
    ``pipeline`` (running) or a worker of its own."""
    if pipeline is None:
        topics = Topics.of(settings.namespace)
        await ensure_topics(bootstrap, topics.layout(settings.partitions))
        pipeline = build_pipeline(settings, bootstrap, engine)
        await pipeline.app.start()
        try:
            return await walk_rollout(
                settings, bootstrap, engine, rollout_id, start, walk, pipeline
            )
        finally:
            await pipeline.app.stop()
    topics = Topics.of(settings.namespace)
    publisher = AlertPublisher(engine, bootstrap, topics.alerts)
    options = AnalysisOptions(settings.alpha, settings.tau)
    rng = random.Random(walk.seed)
    steps: list[Step] = []
    await publisher.start()
    try:
        for number in range(walk.max_steps):
            with Session(engine) as session:
                row = session.get_one(RolloutRow, rollout_id)
                state, stage, key = row.state, row.stage, row.experiment
            if state in ("released", "rolled_back"):
                break
            catalog = await asyncio.to_thread(load_effective_catalog, engine)
            experiment = catalog.experiment(key)
            # The worker re-reads the catalog every flush interval; this step's comparison
            # (new, or grown) must be known before its events arrive.
            await asyncio.to_thread(pipeline.reload_catalog)
            at = start + walk.step * number
            lines, exposed = stage_events(
                experiment, walk, number * walk.users_per_step, at.timestamp(), rng
            )
            targets = await produce_lines(settings, bootstrap, lines)
            await wait_until_flushed(engine, topics.events, targets, timeout=300)
            now = at + walk.step
            look = await asyncio.to_thread(analyze_once, engine, settings.alpha, settings.tau, now)
            await publisher.publish_pending()
            await asyncio.to_thread(schedule_once, engine, options, now)
            with Session(engine) as session:
                state = session.get_one(RolloutRow, rollout_id).state
            percent = experiment.coverage * 50
            steps.append(Step(number, now, stage, percent, exposed, state, look.alerts))
    finally:
        await publisher.stop()
    return steps
