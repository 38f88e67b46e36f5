"""Plotly figures (plain JSON, drawn in the browser by plotly.js) for the results page."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from config.catalog import Experiment

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
RECENT = 2 / 3  # the y-axis fits the last two thirds of the windows, not the noisy first ones


def _date(window_start: int) -> str:
    return datetime.fromtimestamp(window_start, UTC).strftime("%Y-%m-%d %H:%M")


def _layout(title: str, y_title: str, y_range: list[float] | None, percent: bool) -> dict[str, Any]:
    axis: dict[str, Any] = {"title": {"text": y_title}, "zeroline": True, "zerolinewidth": 2}
    if y_range is not None:
        axis["range"] = y_range
    if percent:
        axis["tickformat"] = "+.0%"
    return {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"type": "date", "title": {"text": "window start (UTC)"}},
        "yaxis": axis,
        "height": 280,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "legend": {"orientation": "h", "y": -0.3},
    }


def lift_figures(experiment: Experiment, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: each variant's relative effect and its always-valid interval over time."""
    by_metric: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for point in points:
        by_metric[point["metric"]][point["variant"]].append(point)
    figures = []
    for metric in experiment.analysed_metrics:
        traces: list[dict[str, Any]] = []
        bounds: list[float] = []
        for number, (variant, series) in enumerate(by_metric.get(metric, {}).items()):
            colour = COLOURS[number % len(COLOURS)]
            x = [_date(p["window_start"]) for p in series]
            traces += [
                {"x": x, "y": [p["high"] for p in series], "mode": "lines", "line": {"width": 0},
                 "showlegend": False, "hoverinfo": "skip", "legendgroup": variant},
                {"x": x, "y": [p["low"] for p in series], "mode": "lines", "line": {"width": 0},
                 "fill": "tonexty", "fillcolor": colour + "33", "name": f"{variant}: interval",
                 "legendgroup": variant},
                {"x": x, "y": [p["rel_effect"] for p in series], "mode": "lines",
                 "line": {"color": colour}, "name": f"{variant} vs {experiment.control}",
                 "legendgroup": variant},
            ]  # fmt: skip
            recent = series[int(len(series) * (1 - RECENT)) :]
            bounds += [
                v for p in recent for v in (p["low"], p["high"], p["rel_effect"]) if v is not None
            ]
        y_range = None
        if bounds:
            low, high = min(min(bounds), 0.0), max(max(bounds), 0.0)
            pad = (high - low) * 0.1 or 0.01
            y_range = [low - pad, high + pad]
        figures.append(
            {
                "data": traces,
                "layout": _layout(
                    f"{metric}: relative effect, always-valid interval", "lift", y_range, True
                ),
            }
        )
    return figures


def users_figure(experiment: Experiment, points: list[dict[str, Any]]) -> dict[str, Any]:
    """Users per arm over time beside the split the weights expect."""
    first = experiment.analysed_metrics[0] if experiment.analysed_metrics else None
    arms: dict[str, dict[int, float]] = defaultdict(dict)
    for point in points:
        if point["metric"] == first:
            arms[experiment.control][point["window_start"]] = point["n_control"]
            arms[point["variant"]][point["window_start"]] = point["n_variant"]
    windows = sorted({w for series in arms.values() for w in series})
    total = [sum(series.get(w, 0.0) for series in arms.values()) for w in windows]
    weights = {v.key: v.weight for v in experiment.variants}
    weight_sum = sum(weights.values()) or 1.0
    x = [_date(w) for w in windows]
    traces: list[dict[str, Any]] = []
    for number, variant in enumerate(experiment.variant_keys):
        colour = COLOURS[number % len(COLOURS)]
        traces.append(
            {"x": x, "y": [arms[variant].get(w) for w in windows], "mode": "lines",
             "line": {"color": colour}, "name": variant}
        )  # fmt: skip
        share = weights.get(variant, 0.0) / weight_sum
        traces.append(
            {"x": x, "y": [t * share for t in total], "mode": "lines",
             "line": {"color": colour, "dash": "dot"}, "name": f"{variant} expected ({share:.0%})"}
        )  # fmt: skip
    return {"data": traces, "layout": _layout("users per arm", "users", None, False)}
