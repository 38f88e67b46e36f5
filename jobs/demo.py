"""`xpstream demo`: the whole walk on embedded defaults — broker, SQLite, simulated traffic for
three experiments (a real lift, an A/A, a guardrail regression), analysis and an HTML report;
then two staged rollouts on a moved clock, one healthy and released, one rolled back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from config.rollouts import RolloutIn
from config.settings import Settings
from jobs.replay import analyse_and_publish, produce_lines, wait_until_flushed
from jobs.report import build_report, render_html, render_text
from jobs.rollout_walk import Step, Walk, walk_rollout
from jobs.run import analyzer_and_publisher
from jobs.simulate import (
    DEMO_EFFECTS,
    DEMO_ROLLOUT,
    Traffic,
    demo_catalog,
    recent_start,
    simulate,
)
from pipelines.embedded_broker import broker_url
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import Pipeline, build_pipeline
from sinks.alert_publisher import read_alerts
from sinks.sql.keys import create_api_key
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.results import reset_analysis_state, rolled_back_flags
from sinks.sql.rollouts import create_rollout
from sinks.sql.store import make_engine, reset_pipeline_state, save_catalog


@dataclass
class DemoTimeline:
    first_event_at: float = 0.0  # wall clock (epoch seconds) when the first envelope was sent
    alerts: list[dict[str, Any]] = field(default_factory=list)  # as consumed from the topic
    rollouts: dict[str, list[Step]] = field(default_factory=dict)  # flag → the walk's steps


async def _run_pipeline(
    settings: Settings, bootstrap: str, engine: Engine, lines: list[bytes], progress: Progress
) -> DemoTimeline:
    """Workers, analyzer loop and alert publisher together, as `xpstream run` runs them."""
    topics = Topics.of(settings.namespace)
    await ensure_topics(bootstrap, topics.layout(settings.partitions))
    pipeline = build_pipeline(settings, bootstrap, engine)
    timeline = DemoTimeline()
    await pipeline.app.start()
    stop = asyncio.Event()
    analysis = asyncio.create_task(analyzer_and_publisher(settings, bootstrap, engine, stop, "all"))
    try:
        producing = progress.add_task("producing envelopes", total=None)
        timeline.first_event_at = time.time()
        targets = await produce_lines(settings, bootstrap, lines)
        progress.update(producing, total=1, completed=1)
        processing = progress.add_task("attributing + flushing", total=len(lines))
        await wait_until_flushed(
            engine,
            topics.events,
            targets,
            timeout=600,
            progress=lambda done, total: progress.update(processing, completed=done, total=total),
        )
        stop.set()
        await analysis
        await analyse_and_publish(settings, bootstrap, engine)  # the final look, on all the data
        timeline.alerts = await read_alerts(bootstrap, topics.alerts)
        # The rollouts step on a moved clock of their own, so the analyzer and scheduler loops
        # (on the wall clock) are stopped first; the workers stay.
        walking = progress.add_task("staged rollouts", total=None)
        timeline.rollouts = await _walk_rollouts(settings, bootstrap, engine, pipeline)
        progress.update(walking, total=1, completed=1)
    finally:
        stop.set()
        await analysis
        await pipeline.app.stop()
    return timeline


def run_demo(settings: Settings, users: int, report_path: Path, console: Console) -> dict[str, Any]:
    started = time.monotonic()
    settings = settings.model_copy(update={"kafka_flavor": "tansu", "window_seconds": 3600})
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    catalog = demo_catalog()
    save_catalog(engine, catalog)
    reset_pipeline_state(engine)
    reset_analysis_state(engine)
    traffic = Traffic(
        users=users,
        start_ts=recent_start(3.0),
        days=3.0,
        lookback_days=settings.cuped_lookback_days,
    )
    lines = [orjson.dumps(event) for event in simulate(catalog, traffic, DEMO_EFFECTS)]
    console.print(f"simulated {users} users, {len(lines)} events, 3 experiments")
    with (
        broker_url(settings.kafka_url) as bootstrap,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        console.print(f"broker: {bootstrap}{'' if settings.kafka_url else ' (embedded Tansu)'}")
        timeline = asyncio.run(_run_pipeline(settings, bootstrap, engine, lines, progress))
    reports = {}
    for experiment in catalog.experiments:
        report = build_report(engine, catalog, experiment.key, settings.alpha, settings.tau)
        reports[experiment.key] = report
        console.print(render_text(report), highlight=False)
        console.print()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    keys = [e.key for e in catalog.experiments]
    report_path.write_text(render_html(settings, engine, keys), encoding="utf-8")
    admin_key = create_api_key(engine, "admin", "demo console", actor="demo")
    engine.dispose()
    summary = {
        key: any(r["significant"] for r in report["results"]) for key, report in reports.items()
    }
    for key, significant in summary.items():
        console.print(f"{key}: {'significant' if significant else 'not significant'}")
    _print_alerts(engine, timeline, console)
    _print_rollouts(timeline.rollouts, console)
    console.print(f"HTML report: {report_path}   ({time.monotonic() - started:.0f}s)")
    console.print(
        "console: http://127.0.0.1:8000/ui after `xpstream api` (same database); "
        f"sign in with {admin_key} (a demo admin key)",
        highlight=False,
        soft_wrap=True,
    )
    return reports


async def _walk_rollouts(
    settings: Settings, bootstrap: str, engine: Engine, pipeline: Pipeline
) -> dict[str, list[Step]]:
    """A healthy new search and a payments change that raises errors by 30%, each released in
    stages 1 → 5 → 10 → 25 → 50 → 100% with metric triggers, an hour of traffic a step."""
    start = datetime.fromtimestamp(recent_start(1.0), UTC)
    walks = {}
    for flag, factor in (("search-v2", 1.0), ("payments-v2", 1.3)):
        with Session(engine) as session, session.begin():
            rollout = RolloutIn.model_validate({**DEMO_ROLLOUT, "flag": flag})
            rollout_id = create_rollout(session, rollout, "demo", start).id
        plan = Walk(20_000, timedelta(hours=1), max_steps=12, errors_factor=factor)
        walks[flag] = await walk_rollout(
            settings, bootstrap, engine, rollout_id, start, plan, pipeline
        )
    return walks


def _print_rollouts(walks: dict[str, list[Step]], console: Console) -> None:
    for flag, steps in walks.items():
        console.print(f"rollout of {flag}:")
        for step in steps:
            arms = ", ".join(f"{arm} {users}" for arm, users in step.exposed.items())
            console.print(f"  {step.percent:g}%: exposed {arms} → {step.state}", highlight=False)
            for alert in step.alerts:
                low, high = alert["rel_ci"] or (float("nan"), float("nan"))
                console.print(
                    f"  ROLLED BACK at {step.percent:g}%: {alert['metric']} "
                    f"{alert['rel_effect']:+.1%} [{low:+.1%}, {high:+.1%}] in {alert['variant']}",
                    highlight=False,
                )


def _print_alerts(engine: Engine, timeline: DemoTimeline, console: Console) -> None:
    rolled_back = rolled_back_flags(engine)
    for flag, at in rolled_back.items():
        console.print(
            f"flag {flag} ROLLED BACK {at.timestamp() - timeline.first_event_at:.1f}s after the "
            "first event was sent"
        )
    if not rolled_back:
        console.print("no flag was rolled back")
    console.print(f"alerts consumed from the topic: {len(timeline.alerts)}")
    for alert in timeline.alerts:
        console.print_json(data=alert)
