"""`xpstream report EXPERIMENT`: cumulative per-arm statistics from the window rows + analysis."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from config.catalog import Catalog
from config.settings import Settings
from sinks.sql.analysis import analyse_stored
from sinks.sql.results import flag_rolled_back, guardrail_actions
from sinks.sql.store import counter_totals
from stats.analysis import AnalysisOptions
from stats.experiment_analysis import guardrail_checks
from stats.sufficient import STATISTICS


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


def render_html(settings: Settings, engine: Engine, keys: list[str]) -> str:
    """The console's results page of ``keys`` as one self-contained file (plotly.js inline):
    what the analyzer stored at its last look, and the effect over time."""
    from api.console.pages import results_html
    from api.state import ApiState

    return results_html(ApiState(settings=settings, engine=engine, bootstrap=""), keys)
