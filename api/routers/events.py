"""POST /v1/events: validate like the pipeline, produce envelopes per partition
(docs/design.md §5)."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException

from api.deps import Ingester, StateDep
from api.schemas import EventsIn, EventsOut, RejectedEvent
from api.state import BrokerUnavailableError
from api.strict_json import StrictJsonRoute
from pipelines.events import MAX_EVENT_BYTES, InvalidEvent, validate_event
from pipelines.producer import send_envelopes
from pipelines.topics import Topics

router = APIRouter(prefix="/v1", tags=["events"], route_class=StrictJsonRoute)
RETRY_AFTER_SECONDS = "5"
SEND_TIMEOUT_SECONDS = 15.0


@router.post("/events", status_code=202, response_model=EventsOut)
async def post_events(body: EventsIn, state: StateDep, _caller: Ingester) -> EventsOut:
    """202 once every accepted event is acknowledged by the broker; 503 (retry) when it is down:
    then nothing of this request may be assumed stored, and a retry is de-duplicated by event_id."""
    index = (await state.current_catalog()).index
    accepted: list[bytes] = []
    rejections: list[RejectedEvent] = []
    for position, item in enumerate(body.events):
        try:
            validate_event(item, index)
            raw = orjson.dumps(item)
            if len(raw) > MAX_EVENT_BYTES:
                raise InvalidEvent("too_large", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
        except InvalidEvent as invalid:
            rejections.append(
                RejectedEvent(index=position, reason=invalid.reason, detail=invalid.detail)
            )
            continue
        except orjson.JSONEncodeError as exc:
            rejections.append(
                RejectedEvent(index=position, reason="bad_type:event", detail=str(exc))
            )
            continue
        accepted.append(raw)
    if accepted:
        try:
            producer = await state.producer()
            await asyncio.wait_for(
                send_envelopes(
                    producer,
                    Topics.of(state.settings.namespace).events,
                    accepted,
                    state.settings.partitions,
                ),
                SEND_TIMEOUT_SECONDS,
            )
        except (BrokerUnavailableError, KafkaError, TimeoutError) as exc:
            raise HTTPException(
                503,
                f"event broker unavailable ({type(exc).__name__}); retry the whole request",
                {"Retry-After": RETRY_AFTER_SECONDS},
            ) from None
    state.metrics.events_accepted.inc(len(accepted))
    for rejection in rejections:
        state.metrics.events_rejected.labels(rejection.reason).inc()
    return EventsOut(accepted=len(accepted), rejected=len(rejections), rejections=rejections)
