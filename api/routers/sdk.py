"""What GrowthBook's SDKs fetch with a public client key: the features payload, and a stream
of it on every change (docs/design.md §16)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from api.auth import Caller
from api.catalog_watch import MAX_SUBSCRIBERS
from api.deps import StateDep
from api.sdk_payload import payload
from api.state import ApiState, CatalogSnapshot
from api.strict_json import StrictJsonRoute

router = APIRouter(tags=["sdk payload"], route_class=StrictJsonRoute)
PUBLIC_HEADERS = {
    "Access-Control-Allow-Origin": "*",  # browsers load it from any origin
    "Access-Control-Expose-Headers": "ETag, x-sse-support",
    "Cache-Control": "no-cache",  # revalidate with If-None-Match every time
}


async def client(state: ApiState, request: Request, client_key: str) -> Caller:
    """The client key in the path (public: it reads nothing else); 401 otherwise."""
    caller = await state.auth.caller(client_key)
    if caller is None or caller.role != "client":
        address = request.client.host if request.client else "unknown"
        raise state.auth.refused(address, client_key, "unknown client key")
    return caller


@router.get("/api/features/{client_key}")
async def features(client_key: str, request: Request, state: StateDep) -> Response:
    """GrowthBook's SDK payload; ``If-None-Match`` of the current ``ETag`` gets 304."""
    caller = await client(state, request, client_key)
    snapshot = await state.current_catalog()
    etag = f'"{snapshot.version}"'
    headers = {**PUBLIC_HEADERS, "ETag": etag, "x-sse-support": "enabled"}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    return Response(
        encoded(state, snapshot, caller), media_type="application/json", headers=headers
    )


def encoded(state: ApiState, snapshot: CatalogSnapshot, caller: Caller) -> bytes:
    """The payload's bytes, built once per snapshot and encryption key (not per request)."""
    built_for, cache = state.payloads
    if built_for is not snapshot:
        cache = {}
        state.payloads = (snapshot, cache)
    body = cache.get(caller.payload_key)
    if body is None:
        body = cache[caller.payload_key] = orjson.dumps(payload(snapshot, caller.payload_key))
    return body


HEARTBEAT_SECONDS = 15.0  # a comment line keeps idle connections (and proxies) open


@router.get("/sub/{client_key}")
async def stream(client_key: str, request: Request, state: StateDep) -> Response:
    """Server-sent events: a ``features`` event with the whole payload now and on every
    change of the catalog, as GrowthBook's SDKs stream it."""
    caller = await client(state, request, client_key)
    watch = request.app.state.watch
    if watch.subscribers >= MAX_SUBSCRIBERS:
        raise HTTPException(503, "too many streaming subscribers", {"Retry-After": "30"})
    watch.start()

    async def events() -> AsyncIterator[bytes]:
        watch.subscribers += 1
        try:
            while True:
                snapshot = await state.current_catalog()
                yield b"event: features\ndata: " + encoded(state, snapshot, caller) + b"\n\n"
                while not await watch.wait(HEARTBEAT_SECONDS):
                    yield b": heartbeat\n\n"
        finally:
            watch.subscribers -= 1

    headers = {**PUBLIC_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
