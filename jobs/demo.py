"""`xpstream demo`: the whole walk on embedded defaults — broker, SQLite, simulated traffic for
three experiments (a real lift, an A/A, a guardrail regression), analysis and an HTML report."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine

from config.settings import Settings
from jobs.replay import analyse_and_publish, produce_lines, wait_until_flushed
from jobs.report import build_report, cumulative_lift_series, render_html, render_text
from jobs.run import analyzer_and_publisher
from jobs.simulate import DEMO_EFFECTS, Traffic, demo_catalog, recent_start, simulate
from pipelines.embedded_broker import broker_url
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import build_pipeline
from sinks.alert_publisher import read_alerts
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.results import reset_analysis_state, rolled_back_flags
from sinks.sql.store import make_engine, reset_pipeline_state, save_catalog


@dataclass
class DemoTimeline:
    first_event_at: float = 0.0  # wall clock (epoch seconds) when the first envelope was sent
    alerts: list[dict[str, Any]] = field(default_factory=list)  # as consumed from the topic


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
    finally:
        stop.set()
        await analysis
        await pipeline.app.stop()
    await analyse_and_publish(settings, bootstrap, engine)  # the final look, on all the data
    timeline.alerts = await read_alerts(bootstrap, topics.alerts)
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
    pages = [
        render_html(
            reports[e.key], cumulative_lift_series(engine, catalog, e, settings.alpha, settings.tau)
        )
        for e in catalog.experiments
    ]
    report_path.write_text("\n<hr>\n".join(pages), encoding="utf-8")
    engine.dispose()
    summary = {
        key: any(r["significant"] for r in report["results"]) for key, report in reports.items()
    }
    for key, significant in summary.items():
        console.print(f"{key}: {'significant' if significant else 'not significant'}")
    _print_alerts(engine, timeline, console)
    console.print(f"HTML report: {report_path}   ({time.monotonic() - started:.0f}s)")
    return reports


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
