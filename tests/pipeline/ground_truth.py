"""Independent ground truth: per-arm sufficient statistics computed with pandas from the clean
events, following docs/design.md §5 word by word (no pipeline code involved)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from config.catalog import Catalog
from stats.sufficient import STATISTICS

STATS = STATISTICS  # the names only: every value here is computed with pandas


def _to_epoch(ts: Any) -> float:
    if isinstance(ts, str):
        return pd.Timestamp(ts).timestamp()
    return float(ts)


def ground_truth(
    clean_events: list[dict[str, Any]], catalog: Catalog, lookback_seconds: float
) -> pd.DataFrame:
    """Index (experiment, variant, metric) → the nine sums. ``clean_events`` in arrival order."""
    frame = pd.DataFrame(clean_events)
    frame["seq"] = np.arange(len(frame))
    frame["ts"] = frame["ts"].map(_to_epoch)
    frame = frame.drop_duplicates(["user_id", "event_id"], keep="first")
    exposures = (
        frame[frame["type"] == "exposure"]
        .sort_values("seq")
        .drop_duplicates(["user_id", "experiment"], keep="first")[
            ["user_id", "experiment", "variant", "ts"]
        ]
        .rename(columns={"ts": "t_e"})
    )
    metric_events = frame[frame["type"] == "metric"][["user_id", "metric", "ts", "value"]]
    kinds = {m.key: m for m in catalog.metrics}

    def user_values(experiment: str, metric_key: str) -> pd.DataFrame:
        """Per exposed user: y and x of an event metric, by kind, then capped."""
        metric = kinds[metric_key]
        users = exposures[exposures["experiment"] == experiment]
        events = metric_events[metric_events["metric"] == metric_key].merge(users, on="user_id")
        contribution = events["value"] if metric.kind == "sum" else 1.0
        events = events.assign(c=contribution)
        post = events[events["ts"] >= events["t_e"]].groupby("user_id")["c"].sum()
        pre_mask = (events["ts"] < events["t_e"]) & (
            events["ts"] >= events["t_e"] - lookback_seconds
        )
        pre = events[pre_mask].groupby("user_id")["c"].sum()
        out = users.set_index("user_id")[["variant"]].copy()
        out["y"] = post.reindex(out.index, fill_value=0.0)
        out["x"] = pre.reindex(out.index, fill_value=0.0)
        if metric.kind == "conversion":
            out["y"] = (out["y"] > 0).astype(float)
            out["x"] = (out["x"] > 0).astype(float)
        if metric.cap is not None:
            out["y"] = out["y"].clip(upper=metric.cap)
            out["x"] = out["x"].clip(upper=metric.cap)
        return out

    rows = []
    for experiment in catalog.experiments:
        for metric_key in experiment.analysed_metrics:
            metric = kinds[metric_key]
            if metric.kind == "ratio":
                num = user_values(experiment.key, str(metric.numerator))
                den = user_values(experiment.key, str(metric.denominator))
                values = pd.DataFrame(
                    {"variant": num["variant"], "y": num["y"], "x": 0.0, "d": den["y"]}
                )
            else:
                values = user_values(experiment.key, metric_key)
                values["d"] = 0.0
            for variant, group in values.groupby("variant"):
                y, x, d = group["y"], group["x"], group["d"]
                rows.append(
                    {
                        "experiment": experiment.key,
                        "variant": variant,
                        "metric": metric_key,
                        "n": float(len(group)),
                        "sum": y.sum(),
                        "sum_sq": (y**2).sum(),
                        "x_sum": x.sum(),
                        "x_sum_sq": (x**2).sum(),
                        "xy_sum": (x * y).sum(),
                        "den_sum": d.sum(),
                        "den_sum_sq": (d**2).sum(),
                        "num_den_sum": (y * d).sum(),
                    }
                )
    return pd.DataFrame(rows).set_index(["experiment", "variant", "metric"]).sort_index()


def crossover_users(clean_events: list[dict[str, Any]]) -> dict[str, int]:
    frame = pd.DataFrame(clean_events).drop_duplicates(["user_id", "event_id"], keep="first")
    exposures = frame[frame["type"] == "exposure"]
    variants = exposures.groupby(["experiment", "user_id"])["variant"].nunique()
    crossed = variants[variants > 1].groupby(level=0).size()
    return {str(k): int(v) for k, v in crossed.items()}
