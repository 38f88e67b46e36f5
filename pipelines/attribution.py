"""Per-user attribution (DESIGN.md §5) and deltas of sufficient statistics (§3), no I/O.

A user's state is a plain dict (MessagePack in its Faust table):
``ids`` recent event ids, ``exp`` {experiment: [variant, t_e]}, ``xo`` experiments with a
crossover, ``raw`` {experiment: {metric: [y_raw, x_raw]}} for event metrics, ``buf`` recent
metric events [ts, metric, value] for exposures still to come, ``hi`` the newest event time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from config.catalog import Catalog, Metric
from pipelines.events import Event, Exposure

WindowKey = tuple[str, str, str, int]  # experiment, variant, metric, window_start


@dataclass(frozen=True)
class AttributionConfig:
    catalog: Catalog
    window_seconds: int
    lookback_seconds: float
    buffer_size: int = 256
    dedup_size: int = 1024
    # derived: event metric → [(experiment, analysed metrics depending on it)]
    dependents: dict[str, list[tuple[str, tuple[Metric, ...]]]] = field(default_factory=dict)
    analysed: dict[str, tuple[Metric, ...]] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)

    @classmethod
    def of(
        cls, catalog: Catalog, window_seconds: int, lookback_seconds: float
    ) -> AttributionConfig:
        metrics = {m.key: m for m in catalog.metrics}
        analysed: dict[str, tuple[Metric, ...]] = {}
        dependents: dict[str, list[tuple[str, tuple[Metric, ...]]]] = defaultdict(list)
        for experiment in catalog.experiments:
            chosen = tuple(metrics[k] for k in experiment.analysed_metrics)
            analysed[experiment.key] = chosen
            by_event_metric: dict[str, list[Metric]] = defaultdict(list)
            for metric in chosen:
                for part in _parts(metric):
                    by_event_metric[part].append(metric)
            for event_metric, metric_list in by_event_metric.items():
                dependents[event_metric].append((experiment.key, tuple(metric_list)))
        return cls(
            catalog,
            window_seconds,
            lookback_seconds,
            dependents=dict(dependents),
            analysed=analysed,
            metrics=metrics,
        )

    def window(self, ts: float) -> int:
        return int(math.floor(ts / self.window_seconds) * self.window_seconds)


def _parts(metric: Metric) -> tuple[str, ...]:
    if metric.kind == "ratio":
        return (str(metric.numerator), str(metric.denominator))
    return (metric.key,)


def contribution(kind: str, value: float) -> float:
    return value if kind == "sum" else 1.0


def user_value(metric: Metric, raw: float) -> float:
    """The user-level value of an event metric from its running raw total, capped."""
    value = (1.0 if raw > 0 else 0.0) if metric.kind == "conversion" else raw
    return min(value, metric.cap) if metric.cap is not None else value


@dataclass
class Aggregates:
    """Deltas booked per window, and counters, for one partition."""

    windows: dict[WindowKey, list[float]] = field(default_factory=dict)
    counters: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def row(self, key: WindowKey) -> list[float]:
        row = self.windows.get(key)
        if row is None:
            row = self.windows[key] = [0.0] * 9
        return row

    def book(self, key: WindowKey, delta: Iterable[float]) -> None:
        row = self.row(key)
        for i, d in enumerate(delta):
            row[i] += d


def new_state() -> dict[str, Any]:
    return {"ids": [], "exp": {}, "xo": [], "raw": {}, "buf": [], "hi": -math.inf}


class UserAttribution:
    """Applies one user's events to its state, booking deltas into ``aggregates``."""

    def __init__(self, config: AttributionConfig, aggregates: Aggregates) -> None:
        self.config = config
        self.aggregates = aggregates

    def apply(
        self, state: dict[str, Any] | None, events: list[Event]
    ) -> tuple[dict[str, Any], int]:
        """Returns the new state and how many events were duplicates."""
        state = state or new_state()
        ids: list[str] = state["ids"]
        # A scan beats hashing every stored id when an envelope holds few of the user's events.
        seen: list[str] | set[str] = ids if len(events) <= 2 else set(ids)
        duplicates = 0
        for event in events:
            if event.event_id in seen:
                duplicates += 1
                continue
            if seen is not ids:
                seen.add(event.event_id)  # type: ignore[union-attr]
            ids.append(event.event_id)
            if event.ts > state["hi"]:
                state["hi"] = event.ts
            if isinstance(event, Exposure):
                self._expose(state, event)
            else:
                self._metric(state, event.ts, event.metric, event.value)
                self._buffer(state, event.ts, event.metric, event.value)
        if len(ids) > self.config.dedup_size:
            del ids[: len(ids) - self.config.dedup_size]
        return state, duplicates

    def _expose(self, state: dict[str, Any], event: Exposure) -> None:
        exposures = state["exp"]
        known = exposures.get(event.experiment)
        if known is not None:
            if known[0] != event.variant and event.experiment not in state["xo"]:
                state["xo"].append(event.experiment)
                self.aggregates.counters[("crossovers", event.experiment)] += 1
            return
        exposures[event.experiment] = [event.variant, event.ts]
        state["raw"][event.experiment] = {}
        self.aggregates.counters[("users", event.experiment)] += 1
        window = self.config.window(event.ts)
        for metric in self.config.analysed.get(event.experiment, ()):
            self.aggregates.row((event.experiment, event.variant, metric.key, window))[0] += 1.0
        # Metric events that arrived before this exposure, split by their event time.
        for ts, metric_key, value in sorted(state["buf"]):
            self._metric(state, ts, metric_key, value, only=event.experiment)

    def _metric(
        self,
        state: dict[str, Any],
        ts: float,
        metric_key: str,
        value: float,
        only: str | None = None,
    ) -> None:
        config = self.config
        event_metric = config.metrics[metric_key]
        added = contribution(event_metric.kind, value)
        for experiment, analysed in config.dependents.get(metric_key, ()):
            if only is not None and experiment != only:
                continue
            exposure = state["exp"].get(experiment)
            if exposure is None:
                continue
            variant, t_e = exposure
            if ts >= t_e:
                slot = 0
            elif ts >= t_e - config.lookback_seconds:
                slot = 1
            else:
                continue
            raw = state["raw"][experiment]
            before = raw.get(metric_key, (0.0, 0.0))
            after = [before[0], before[1]]
            after[slot] += added
            raw[metric_key] = after
            window = config.window(max(ts, t_e))
            for metric in analysed:
                key = (experiment, variant, metric.key, window)
                if metric.kind == "ratio":
                    delta = self._ratio_delta(metric, raw, metric_key, before)
                    if delta is not None:
                        self.aggregates.book(key, delta)
                else:
                    self._book_value(key, metric, slot, before, after)

    def _book_value(
        self, key: WindowKey, metric: Metric, slot: int, before: Any, after: list[float]
    ) -> None:
        """The delta of a sum/count/conversion metric when one raw total (y: slot 0, x: slot 1)
        moved: its sum and square, and the cross term with the other, unchanged, value."""
        v0, v1 = user_value(metric, before[slot]), user_value(metric, after[slot])
        if v0 == v1:
            return
        other = user_value(metric, before[1 - slot])
        row = self.aggregates.row(key)
        first = 1 if slot == 0 else 3  # sum, sum_sq for y; x_sum, x_sum_sq for x
        row[first] += v1 - v0
        row[first + 1] += v1 * v1 - v0 * v0
        row[5] += v1 * other - v0 * other

    def _ratio_delta(
        self, metric: Metric, raw: dict[str, list[float]], changed: str, before: Any
    ) -> tuple[float, ...] | None:
        metrics = self.config.metrics
        numerator, denominator = metrics[str(metric.numerator)], metrics[str(metric.denominator)]

        def value_of(part: Metric, raw_values: Any) -> float:
            return user_value(part, raw_values[0])

        num_before = before if changed == numerator.key else raw.get(numerator.key, (0.0, 0.0))
        den_before = before if changed == denominator.key else raw.get(denominator.key, (0.0, 0.0))
        num_after = raw.get(numerator.key, (0.0, 0.0))
        den_after = raw.get(denominator.key, (0.0, 0.0))
        y0, d0 = value_of(numerator, num_before), value_of(denominator, den_before)
        y1, d1 = value_of(numerator, num_after), value_of(denominator, den_after)
        if y0 == y1 and d0 == d1:
            return None
        return (
            0.0,
            y1 - y0,
            y1 * y1 - y0 * y0,
            0.0,
            0.0,
            0.0,
            d1 - d0,
            d1 * d1 - d0 * d0,
            y1 * d1 - y0 * d0,
        )

    def _buffer(self, state: dict[str, Any], ts: float, metric: str, value: float) -> None:
        buffer = state["buf"]
        buffer.append([ts, metric, value])
        oldest = state["hi"] - 2 * self.config.lookback_seconds
        if len(buffer) > self.config.buffer_size or buffer[0][0] < oldest:
            kept = [item for item in buffer if item[0] >= oldest]
            state["buf"] = kept[-self.config.buffer_size :]
