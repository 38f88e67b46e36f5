"""`xpstream report EXPERIMENT`: cumulative per-arm statistics from the window rows + analysis."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from sqlalchemy import Engine

from config.catalog import Catalog, Experiment
from sinks.sql.analysis import analyse_stored
from sinks.sql.results import flag_rolled_back, guardrail_actions
from sinks.sql.store import counter_totals, window_rows
from stats.analysis import AnalysisOptions, ComparisonBatch, analyze
from stats.experiment_analysis import guardrail_checks
from stats.sufficient import STATISTICS, ArmStats


class UnknownExperimentError(KeyError):
    pass


def build_report(
    engine: Engine, catalog: Catalog, experiment_key: str, alpha: float, tau: float
) -> dict[str, Any]:
    """The JSON report of docs/design.md §11, from the analysis service."""
    try:
        experiment = catalog.experiment(experiment_key)
    except StopIteration:
        raise UnknownExperimentError(experiment_key) from None
    analysis = analyse_stored(engine, catalog, [experiment], AnalysisOptions(alpha, tau))
    users = counter_totals(engine, "users").get(experiment.key, 0.0)
    crossovers = counter_totals(engine, "crossovers").get(experiment.key, 0.0)
    outside = counter_totals(engine, "outside_schedule").get(experiment.key, 0.0)
    flag = next((f for f in catalog.flags if f.key == experiment.flag), None)
    srm = analysis.srm_of(experiment.key)
    actions = guardrail_actions(engine, experiment.key)
    return {
        "experiment": experiment.key,
        **experiment.model_dump(
            mode="json", include={"status", "started_at", "stopped_at", "start_at", "end_at"}
        ),
        "arms": [
            {"variant": variant, "metric": c.metric, **{k: c.arms[variant][k] for k in STATISTICS}}
            for c in analysis.comparisons
            for variant in c.arms
        ],
        "results": [r.to_json() for r in analysis.results],
        "srm": srm.to_json() if srm else None,
        "guardrails": [
            {
                "metric": check.guardrail.metric,
                "variant": check.variant,
                "status": check.status,
                "action_taken": actions.get((check.guardrail.metric, check.variant), "none"),
            }
            for check in guardrail_checks(experiment, analysis.results)
        ],
        "flag": (
            {"key": flag.key, "rolled_back": flag_rolled_back(engine, flag.key)} if flag else None
        ),
        "counters": {
            "users": int(users),
            "crossovers": int(crossovers),
            "outside_schedule": int(outside),
        },
    }


def cumulative_lift_series(
    engine: Engine, catalog: Catalog, experiment: Experiment, alpha: float, tau: float
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Relative lift and its interval after each window, per (metric, variant)."""
    rows = window_rows(engine, experiment.key)
    windows = sorted({int(r["window_start"]) for r in rows})
    running: dict[tuple[str, str], ArmStats] = {}
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    by_window: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_window.setdefault(int(row["window_start"]), []).append(row)
    for window in windows:
        for row in by_window[window]:
            stats = ArmStats.from_rows([row])
            key = (row["metric"], row["variant"])
            running[key] = running[key] + stats if key in running else stats
        for metric_key in experiment.analysed_metrics:
            control = running.get((metric_key, experiment.control))
            if control is None:
                continue
            for variant in experiment.variant_keys:
                if variant == experiment.control or (metric_key, variant) not in running:
                    continue
                kind = catalog.metric(metric_key).kind
                batch = ComparisonBatch(
                    control,
                    running[(metric_key, variant)],
                    np.array([kind == "ratio"]),
                    np.array([False]),
                    np.array([0]),
                )
                result = analyze(batch, AnalysisOptions(alpha, tau, "none"))
                series.setdefault((metric_key, variant), []).append(
                    {
                        "window_start": window,
                        "rel_effect": float(result.rel_effect[0]),
                        "low": float(result.rel_ci_low[0]),
                        "high": float(result.rel_ci_high[0]),
                    }
                )
    return series


def render_text(report: dict[str, Any]) -> str:
    lines = [
        f"experiment: {report['experiment']} ({report['status']})   users: "
        f"{report['counters']['users']}   crossovers: {report['counters']['crossovers']}"
    ]
    first_metric = report["arms"][0]["metric"] if report["arms"] else None
    arm_sizes = [
        f"{a['variant']} {int(a['n'])}" for a in report["arms"] if a["metric"] == first_metric
    ]
    lines.append("users per arm: " + ", ".join(arm_sizes))
    if report["srm"]:
        lines.append(
            f"SRM p-value: {report['srm']['p_value']:.4g}"
            f"{'  MISMATCH' if report['srm']['mismatch'] else ''}"
        )
    lines.append(
        f"{'metric':<10}{'variant':<10}{'mean':>9}{'lift':>9}"
        f"{'95% CI':>20}{'p':>9}{'p(seq)':>9} sig"
    )
    for r in report["results"]:
        lift = f"{r['rel_effect']:+.2%}" if r["rel_effect"] is not None else "n/a"
        ci = f"[{r['rel_ci'][0]:+.2%}, {r['rel_ci'][1]:+.2%}]" if r["rel_ci"] else "n/a"
        mean = f"{r['mean_variant']:.4g}" if r["mean_variant"] is not None else "n/a"
        p_value = f"{r['p_value']:.3g}" if r["p_value"] is not None else "n/a"
        seq = f"{r['sequential_p_value']:.3g}" if r["sequential_p_value"] is not None else "n/a"
        lines.append(
            f"{r['metric']:<10}{r['variant']:<10}{mean:>9}{lift:>9}{ci:>20}"
            f"{p_value:>9}{seq:>9} {'yes' if r['significant'] else 'no'}"
        )
    for g in report["guardrails"]:
        action = f", action taken: {g['action_taken']}" if g["action_taken"] != "none" else ""
        lines.append(f"guardrail {g['metric']} ({g['variant']}): {g['status']}{action}")
    if report["flag"] and report["flag"]["rolled_back"]:
        lines.append(f"flag {report['flag']['key']}: ROLLED BACK (control served to everyone)")
    return "\n".join(lines)


def render_html(report: dict[str, Any], series: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """A self-contained page: results table and cumulative lift with its interval (inline SVG)."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(report['experiment'])}"
        "</title><style>body{font-family:sans-serif}td,th{padding:2px 8px}"
        "</style>",
        f"<h1>{html.escape(report['experiment'])}</h1>",
        "<pre>" + html.escape(render_text(report)) + "</pre>",
    ]
    for (metric, variant), points in series.items():
        parts.append(
            f"<h3>{html.escape(metric)} — {html.escape(variant)}: cumulative relative "
            "lift and 95% interval</h3>" + _svg(points)
        )
    return "\n".join(parts)


def _svg(points: list[dict[str, Any]], width: int = 640, height: int = 200) -> str:
    finite = [p for p in points if np.isfinite([p["low"], p["high"]]).all()]
    if not finite:
        return "<p>not enough data</p>"
    low = min(min(p["low"] for p in finite), 0.0)
    high = max(max(p["high"] for p in finite), 0.0)
    span = (high - low) or 1.0

    def x(i: int) -> float:
        return 40 + i * (width - 60) / max(len(finite) - 1, 1)

    def y(v: float) -> float:
        return height - 20 - (v - low) / span * (height - 40)

    band = " ".join(f"{x(i):.1f},{y(p['high']):.1f}" for i, p in enumerate(finite))
    band += " " + " ".join(
        f"{x(i):.1f},{y(p['low']):.1f}" for i, p in reversed(list(enumerate(finite)))
    )
    line = " ".join(f"{x(i):.1f},{y(p['rel_effect']):.1f}" for i, p in enumerate(finite))
    return (
        f"<svg width='{width}' height='{height}'>"
        f"<polygon points='{band}' fill='#9ecae1' opacity='0.6'/>"
        f"<polyline points='{line}' fill='none' stroke='#08519c' stroke-width='2'/>"
        f"<line x1='40' x2='{width - 20}' y1='{y(0):.1f}' y2='{y(0):.1f}' stroke='#555' "
        f"stroke-dasharray='4'/><text x='2' y='{y(high):.1f}'>{high:+.1%}</text>"
        f"<text x='2' y='{y(low):.1f}'>{low:+.1%}</text></svg>"
    )
