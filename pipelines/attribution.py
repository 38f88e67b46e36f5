"""Per-user attribution (docs/design.md §5) and deltas of sufficient statistics (§3), no I/O.

A user's state is a :class:`UserState`: the exposures, crossovers, raw totals per event metric,
recent event ids, and the metric events held for exposures still to come.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from config.catalog import KEY_SEP, Catalog, Metric
from pipelines.events import Event, Exposure
from pipelines.user_state import BUFFER_RECORD, FIRST_TS, ID_END, UserState

WindowKey = tuple[str, str, str, int]  # experiment, variant, metric, window_start
NO_RAW = (0.0, 0.0)
# Positions in a window row: the order of stats.sufficient.STATISTICS, as literals so that mypyc
# inlines them (tests/test_statistics_defined_once.py holds the two together).
N: Final = 0
SUM: Final = 1
SUM_SQ: Final = 2
X_SUM: Final = 3
X_SUM_SQ: Final = 4
XY_SUM: Final = 5
DEN_SUM: Final = 6
DEN_SUM_SQ: Final = 7
NUM_DEN_SUM: Final = 8
ROW_LENGTH: Final = 9


class Ratio(NamedTuple):
    """A ratio metric analysed in an experiment, with the raw keys of its two parts there."""

    metric: Metric
    numerator: Metric
    denominator: Metric
    numerator_key: str
    denominator_key: str


class Target(NamedTuple):
    """What one event metric feeds in one experiment: its raw total, and the analysed metrics
    whose user-level value moves with that total (the metric itself, ratios built on it)."""

    experiment: str
    raw_key: str
    metric: Metric | None  # the event metric, when the experiment analyses it itself
    ratios: tuple[Ratio, ...]
    identity: bool  # the user-level value is the raw total itself (no conversion, no cap)


def raw_key(experiment: str, event_metric: str) -> str:
    return f"{experiment}{KEY_SEP}{event_metric}"


@dataclass(frozen=True)
class AttributionConfig:
    catalog: Catalog
    window_seconds: int
    lookback_seconds: float
    buffer_size: int = 256
    dedup_size: int = 1024
    # derived: event metric → what it feeds, per experiment; experiment → analysed metrics,
    # and the event metrics that feed them
    targets: dict[str, tuple[Target, ...]] = field(default_factory=dict)
    analysed: dict[str, tuple[Metric, ...]] = field(default_factory=dict)
    inputs: dict[str, frozenset[str]] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    # experiment → [started_at, stopped_at] in epoch seconds, where the catalog records them
    periods: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, catalog: Catalog, window_seconds: int, lookback_seconds: float
    ) -> AttributionConfig:
        metrics = {m.key: m for m in catalog.metrics}
        analysed: dict[str, tuple[Metric, ...]] = {}
        inputs: dict[str, frozenset[str]] = {}
        targets: dict[str, list[Target]] = defaultdict(list)
        for experiment in catalog.experiments:
            key = experiment.key
            chosen = tuple(metrics[k] for k in experiment.analysed_metrics)
            analysed[key] = chosen
            ratios = [
                Ratio(
                    m,
                    metrics[str(m.numerator)],
                    metrics[str(m.denominator)],
                    raw_key(key, str(m.numerator)),
                    raw_key(key, str(m.denominator)),
                )
                for m in chosen
                if m.kind == "ratio"
            ]
            plain = {m.key for m in chosen if m.kind != "ratio"}
            fed = plain | {part for r in ratios for part in (r.numerator.key, r.denominator.key)}
            inputs[key] = frozenset(fed)
            for event_metric in sorted(fed):
                targets[event_metric].append(
                    Target(
                        key,
                        raw_key(key, event_metric),
                        metrics[event_metric] if event_metric in plain else None,
                        tuple(
                            r
                            for r in ratios
                            if event_metric in (r.numerator.key, r.denominator.key)
                        ),
                        metrics[event_metric].kind != "conversion"
                        and metrics[event_metric].cap is None,
                    )
                )
        periods = {
            e.key: (
                e.started_at.timestamp() if e.started_at else -math.inf,
                e.stopped_at.timestamp() if e.stopped_at else math.inf,
            )
            for e in catalog.experiments
            if e.started_at or e.stopped_at
        }
        return cls(
            catalog,
            window_seconds,
            lookback_seconds,
            targets={k: tuple(v) for k, v in targets.items()},
            analysed=analysed,
            inputs=inputs,
            metrics=metrics,
            periods=periods,
        )

    def window(self, ts: float) -> int:
        return int(math.floor(ts / self.window_seconds) * self.window_seconds)


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
            row = self.windows[key] = [0.0] * ROW_LENGTH
        return row


def id_key(event_id: str) -> str:
    """The event id as kept for de-duplication: escaped, so that no key holds ID_END and two
    ids never share a key."""
    if ID_END in event_id or "\x01" in event_id:
        return event_id.replace("\x01", "\x01\x01").replace(ID_END, "\x01\x02")
    return event_id


class UserAttribution:
    """Applies one user's events to its state, booking deltas into ``aggregates``."""

    def __init__(self, config: AttributionConfig, aggregates: Aggregates) -> None:
        self.config = config
        self.aggregates = aggregates
        self.buffer_bytes = config.buffer_size * BUFFER_RECORD.size
        self.horizon = 2 * config.lookback_seconds  # buffered events older than this are gone

    def apply(self, state: UserState | None, events: list[Event]) -> tuple[UserState, int]:
        """Returns the new state and how many events were duplicates."""
        state = UserState() if state is None else state
        ids = state.ids
        # Many events: one set beats a scan of the id string per event.
        seen = set(ids.split(ID_END)) if len(events) > 16 else None
        fresh: dict[str, None] = {}  # this call's ids, in order
        duplicates = 0
        for event in events:
            key = id_key(event.event_id)
            if key in fresh or (
                key in seen if seen is not None else f"{ID_END}{key}{ID_END}" in ids
            ):
                duplicates += 1
                continue
            fresh[key] = None
            if event.ts > state.newest:
                state.newest = event.ts
            if isinstance(event, Exposure):
                self._expose(state, event)
            else:
                self._metric(state, event.ts, event.metric, event.value)
                self._buffer(state, event.ts, event.metric, event.value)
        if fresh:  # the latest ``dedup_size`` ids are kept
            ids += ID_END.join(fresh) + ID_END
            count = state.id_count + len(fresh)
            start = 0
            for _ in range(count - self.config.dedup_size):
                start = ids.index(ID_END, start + 1)
            state.ids = ids[start:] if start else ids
            state.id_count = min(count, self.config.dedup_size)
        return state, duplicates

    def _expose(self, state: UserState, event: Exposure) -> None:
        experiment, variant = event.experiment, event.variant
        counters = self.aggregates.counters
        period = self.config.periods.get(experiment)
        if period is not None and not period[0] <= event.ts <= period[1]:
            counters[("outside_schedule", experiment)] += 1  # valid, but not in the experiment
            return
        known = state.exposures.get(experiment)
        if known is not None:
            if known[0] != variant and experiment not in state.crossovers:
                state.crossovers.append(experiment)
                counters[("crossovers", experiment)] += 1
            return
        state.exposures[experiment] = (variant, event.ts)
        counters[("users", experiment)] += 1
        window = self.config.window(event.ts)
        for metric in self.config.analysed.get(experiment, ()):
            self.aggregates.row((experiment, variant, metric.key, window))[N] += 1.0
        # Metric events that arrived before this exposure, split by their event time; those of
        # other metrics, or older than the lookback, would feed nothing.
        names, inputs = state.buffer_metrics, self.config.inputs.get(experiment, frozenset())
        start = event.ts - self.config.lookback_seconds
        held = sorted(
            (ts, names[index], value)
            for ts, value, index in BUFFER_RECORD.iter_unpack(state.buffer)
            if ts >= start and names[index] in inputs
        )
        for ts, metric_key, value in held:
            self._metric(state, ts, metric_key, value, only=experiment)

    def _metric(
        self,
        state: UserState,
        ts: float,
        metric_key: str,
        value: float,
        only: str | None = None,
    ) -> None:
        """Moves the raw totals this event feeds and books the deltas of the analysed metrics,
        in one pass over its targets: it runs for every metric event."""
        config = self.config
        added = value if config.metrics[metric_key].kind == "sum" else 1.0
        lookback = config.lookback_seconds
        exposures, raw = state.exposures, state.raw
        for target in config.targets.get(metric_key, ()):
            experiment = target.experiment
            exposure = exposures.get(experiment)
            if exposure is None or (only is not None and experiment != only):
                continue
            variant, t_e = exposure
            if ts >= t_e:
                slot = 0
            elif ts >= t_e - lookback:
                slot = 1
            else:
                continue
            totals = raw.get(target.raw_key)
            if totals is None:
                totals = raw[target.raw_key] = [0.0, 0.0]
            before = totals[slot]
            totals[slot] = before + added
            window = config.window(max(ts, t_e))
            metric = target.metric
            if metric is not None:
                # The delta of its sum and square, and of the cross term with the other,
                # unchanged, total (y: slot 0, x: slot 1).
                if target.identity:
                    v0, v1, other = before, totals[slot], totals[1 - slot]
                else:
                    v0, v1 = user_value(metric, before), user_value(metric, totals[slot])
                    other = user_value(metric, totals[1 - slot])
                if v0 != v1:
                    row = self.aggregates.row((experiment, variant, metric_key, window))
                    if slot == 0:
                        row[SUM] += v1 - v0
                        row[SUM_SQ] += v1 * v1 - v0 * v0
                    else:
                        row[X_SUM] += v1 - v0
                        row[X_SUM_SQ] += v1 * v1 - v0 * v0
                    row[XY_SUM] += v1 * other - v0 * other
            if slot == 0:  # ratios are of y alone
                for ratio in target.ratios:
                    self._book_ratio(
                        (experiment, variant, ratio.metric.key, window),
                        ratio,
                        raw,
                        metric_key,
                        before,
                    )

    def _book_ratio(
        self,
        key: WindowKey,
        ratio: Ratio,
        raw: dict[str, list[float]],
        changed: str,
        before: float,
    ) -> None:
        """The delta of a ratio's numerator and denominator terms when one part's y moved
        from ``before``."""
        num_after = raw.get(ratio.numerator_key, NO_RAW)[0]
        den_after = raw.get(ratio.denominator_key, NO_RAW)[0]
        num_before = before if changed == ratio.numerator.key else num_after
        den_before = before if changed == ratio.denominator.key else den_after
        y0 = user_value(ratio.numerator, num_before)
        d0 = user_value(ratio.denominator, den_before)
        y1 = user_value(ratio.numerator, num_after)
        d1 = user_value(ratio.denominator, den_after)
        if y0 == y1 and d0 == d1:
            return
        row = self.aggregates.row(key)
        row[SUM] += y1 - y0
        row[SUM_SQ] += y1 * y1 - y0 * y0
        row[DEN_SUM] += d1 - d0
        row[DEN_SUM_SQ] += d1 * d1 - d0 * d0
        row[NUM_DEN_SUM] += y1 * d1 - y0 * d0

    def _buffer(self, state: UserState, ts: float, metric: str, value: float) -> None:
        names = state.buffer_metrics
        if metric in names:
            index = names.index(metric)
        else:
            index = len(names)
            names.append(metric)
        buffer = state.buffer
        buffer += BUFFER_RECORD.pack(ts, value, index)
        oldest = state.newest - self.horizon
        if len(buffer) > self.buffer_bytes or FIRST_TS(buffer)[0] < oldest:
            kept = [record for record in BUFFER_RECORD.iter_unpack(buffer) if record[0] >= oldest]
            state.buffer = bytearray(
                b"".join(
                    [BUFFER_RECORD.pack(*record) for record in kept[-self.config.buffer_size :]]
                )
            )
