"""Wire format (docs/design.md §5): raw bytes → validated exposure and metric events, or
rejections."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson

from config.catalog import Catalog
from config.settings import Settings

DAY = 86400.0
MAX_EVENT_BYTES = 64 * 1024
MAX_ENVELOPE_BYTES = 1024 * 1024


NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


# The envelope decoder builds these in C, untracked by the GC (they hold only str and float);
# the tags make an event's JSON the wire format again (worker.py re-routes strays with it).
class Exposure(msgspec.Struct, tag="exposure", tag_field="type", frozen=True, gc=False):
    event_id: NonEmpty
    ts: float
    user_id: NonEmpty
    experiment: NonEmpty
    variant: NonEmpty


class MetricEvent(msgspec.Struct, tag="metric", tag_field="type", frozen=True, gc=False):
    event_id: NonEmpty
    ts: float
    user_id: NonEmpty
    metric: NonEmpty
    value: float


Event = Exposure | MetricEvent


class Rejection(NamedTuple):
    reason: str
    detail: str
    raw: bytes


@dataclass(frozen=True)
class EventBounds:
    """What a valid event may hold beyond its types, the same for the API and the pipeline:
    event time near now, values far from overflowing the sums of squares."""

    max_age_seconds: float = 400 * DAY
    max_ahead_seconds: float = DAY
    max_abs_value: float = 1e12

    @classmethod
    def of(cls, settings: Settings) -> EventBounds:
        return cls(
            settings.event_max_age_days * DAY,
            settings.event_max_ahead_days * DAY,
            settings.event_max_abs_value,
        )

    def ts_range(self, now: float) -> tuple[float, float]:
        return now - self.max_age_seconds, now + self.max_ahead_seconds


@dataclass(frozen=True)
class CatalogIndex:
    """What validation needs: known experiments, variants and event metrics, and the bounds."""

    variants: dict[str, frozenset[str]] = field(default_factory=dict)
    metric_kinds: dict[str, str] = field(default_factory=dict)  # event metrics (not ratios)
    ratio_metrics: frozenset[str] = frozenset()
    bounds: EventBounds = EventBounds()

    @classmethod
    def of(cls, catalog: Catalog, bounds: EventBounds | None = None) -> CatalogIndex:
        return cls(
            variants={e.key: frozenset(e.variant_keys) for e in catalog.experiments},
            metric_kinds={m.key: m.kind for m in catalog.metrics if m.kind != "ratio"},
            ratio_metrics=frozenset(m.key for m in catalog.metrics if m.kind == "ratio"),
            bounds=bounds or EventBounds(),
        )


class InvalidEvent(Exception):
    """An event refused with a dead-letter reason and a detail naming the field."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _string(obj: dict[str, Any], name: str) -> str:
    if name not in obj:
        raise InvalidEvent(f"missing_field:{name}", f"{name} is required")
    value = obj[name]
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"bad_type:{name}", f"{name} must be a non-empty string")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"bad_type:{name}", f"{name} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise InvalidEvent("non_finite_value", f"{name} is {value!r:.40}")
    return number


def parse_timestamp(value: Any) -> float:
    """RFC 3339 string (with an offset) or epoch seconds → epoch seconds."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent("bad_type:ts", f"ts {value[:40]!r} is not RFC 3339") from None
        if moment.tzinfo is None:
            raise InvalidEvent("bad_type:ts", "ts needs a UTC offset (RFC 3339)")
        return moment.timestamp()
    return _number(value, "ts")


def validate_event(obj: Any, index: CatalogIndex, now: float | None = None) -> Event:
    """A valid event, or :class:`InvalidEvent` naming the field; ``now`` (epoch seconds, the
    wall clock by default) places the event-time bounds."""
    if not isinstance(obj, dict):
        raise InvalidEvent("bad_type:event", "an event must be a JSON object")
    kind = obj.get("type")
    if kind not in ("exposure", "metric"):
        if "type" not in obj:
            raise InvalidEvent("missing_field:type", "type is required")
        raise InvalidEvent("unknown_type", f"type {str(kind)[:40]!r} is not exposure or metric")
    event_id = _string(obj, "event_id")
    if "ts" not in obj:
        raise InvalidEvent("missing_field:ts", "ts is required")
    ts = parse_timestamp(obj["ts"])
    earliest, latest = index.bounds.ts_range(time.time() if now is None else now)
    if not earliest <= ts <= latest:
        raise InvalidEvent(
            "ts_out_of_range", f"ts {obj['ts']!r:.40} is not within {earliest:.0f}..{latest:.0f}"
        )
    user_id = _string(obj, "user_id")
    if kind == "exposure":
        experiment = _string(obj, "experiment")
        variant = _string(obj, "variant")
        variants = index.variants.get(experiment)
        if variants is None:
            raise InvalidEvent("unknown_experiment", f"experiment {experiment[:80]!r}")
        if variant not in variants:
            raise InvalidEvent(
                "unknown_variant", f"variant {variant[:80]!r} of {experiment[:80]!r}"
            )
        return Exposure(event_id, ts, user_id, experiment, variant)
    metric = _string(obj, "metric")
    metric_kind = index.metric_kinds.get(metric)
    if metric_kind is None:
        detail = "ratio metrics are derived" if metric in index.ratio_metrics else ""
        raise InvalidEvent("unknown_metric", f"metric {metric[:80]!r} {detail}".strip())
    if "value" in obj:
        value = _number(obj["value"], "value")
        if abs(value) > index.bounds.max_abs_value:
            raise InvalidEvent(
                "value_out_of_range", f"value {value:.6g} exceeds ±{index.bounds.max_abs_value:g}"
            )
    elif metric_kind == "sum":
        raise InvalidEvent("missing_field:value", "a sum metric event needs a value")
    else:
        value = 1.0  # count and conversion events may omit the value
    return MetricEvent(event_id, ts, user_id, metric, value)


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN/Infinity: the standard parser tells non-finite numbers from garbage.
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent("malformed_json", str(exc)[:200]) from None


@dataclass
class Decoded:
    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


_ENVELOPE = msgspec.json.Decoder(list[Exposure | MetricEvent])
ENCODE_EVENTS = msgspec.json.Encoder().encode  # events → an envelope of the wire format


def _decode_valid_envelope(raw: bytes, index: CatalogIndex, now: float) -> list[Event] | None:
    """An envelope whose every event is valid and complete (ts in epoch seconds, a value on
    every metric event), typed in C (msgspec refuses NaN and out-of-range numbers); None
    otherwise, so the per-event path gives each rejection its reason and each default."""
    try:
        events = _ENVELOPE.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    variants, kinds = index.variants, index.metric_kinds
    earliest, latest = index.bounds.ts_range(now)
    largest = index.bounds.max_abs_value
    for event in events:
        if not earliest <= event.ts <= latest:
            return None
        if isinstance(event, MetricEvent):
            if event.metric not in kinds or not -largest <= event.value <= largest:
                return None
        else:
            known = variants.get(event.experiment)
            if known is None or event.variant not in known:
                return None
    return events


def decode_message(raw: bytes, index: CatalogIndex, now: float | None = None) -> Decoded:
    """One Kafka message: a single event object or a batch envelope (a JSON array of events)."""
    now = time.time() if now is None else now
    decoded = Decoded()
    if len(raw) > MAX_ENVELOPE_BYTES:
        decoded.rejections.append(
            Rejection("too_large", f"{len(raw)} bytes > {MAX_ENVELOPE_BYTES}", raw)
        )
        return decoded
    if raw[:1] == b"[":
        valid = _decode_valid_envelope(raw, index, now)
        if valid is not None:
            decoded.events = valid
            return decoded
    try:
        payload = _loads(raw)
    except InvalidEvent as invalid:
        decoded.rejections.append(Rejection(invalid.reason, invalid.detail, raw))
        return decoded
    if isinstance(payload, list):
        items = payload
    else:
        if len(raw) > MAX_EVENT_BYTES:
            decoded.rejections.append(
                Rejection("too_large", f"{len(raw)} bytes > {MAX_EVENT_BYTES}", raw)
            )
            return decoded
        items = [payload]
    for item in items:
        try:
            decoded.events.append(validate_event(item, index, now))
        except InvalidEvent as invalid:
            # An envelope's bad member is dead-lettered alone, as JSON text (NaN kept as NaN).
            item_raw = raw if item is payload else json.dumps(item).encode()
            decoded.rejections.append(Rejection(invalid.reason, invalid.detail, item_raw))
    return decoded
