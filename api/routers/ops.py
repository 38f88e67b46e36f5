"""Liveness, readiness and Prometheus metrics (unauthenticated, for load balancers and scrapers),
and API key management (admin)."""

from __future__ import annotations

import asyncio
import ipaddress

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.auth import PERMISSIONS, bearer_token
from api.deps import Admin, StateDep
from api.schemas import KeyIn, KeyOut
from api.state import ApiState
from api.strict_json import StrictJsonRoute
from sinks.sql.keys import create_api_key, revoke_api_key

router = APIRouter(tags=["operations"], route_class=StrictJsonRoute)
READY_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: StateDep, response: Response) -> dict[str, str]:
    """200 when the database answers and the broker accepts a connection; 503 otherwise."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        await asyncio.to_thread(_ping_database, state)
    except Exception as exc:  # any driver error means not ready
        checks["database"] = type(exc).__name__
    try:
        host, _, port = state.bootstrap.split(",")[0].rpartition(":")
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), READY_TIMEOUT_SECONDS
        )
        writer.close()
    except (OSError, ValueError, TimeoutError) as exc:
        checks["broker"] = type(exc).__name__
    if any(v != "ok" for v in checks.values()):
        response.status_code = 503
    return checks


def _ping_database(state: ApiState) -> None:
    with state.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus text. ``XPSTREAM_METRICS_ACCESS``: ``loopback`` (default) serves loopback
    clients without a key and others with an analyst key; ``key`` always wants one; ``open``
    never does."""
    access = state.settings.metrics_access
    client = request.client.host if request.client else ""
    if access == "key" or (access == "loopback" and not _loopback(client)):
        token = bearer_token(dict(request.scope.get("headers") or []))
        caller = await state.auth.caller(token) if token else None
        if caller is None:
            raise state.auth.refused(client, token or "", "/metrics needs an API key here")
        if "analyse" not in PERMISSIONS.get(caller.role, frozenset()):
            raise HTTPException(403, f"role {caller.role!r} may not read /metrics")
    body = await asyncio.to_thread(generate_latest, state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "testclient"  # Starlette's TestClient: in the same process


@router.post("/v1/keys", status_code=201, response_model=KeyOut)
def create_key(body: KeyIn, state: StateDep, caller: Admin, response: Response) -> KeyOut:
    token = create_api_key(state.engine, body.role, body.name, actor=caller.actor)
    response.headers["Cache-Control"] = "no-store"  # the only copy of a secret
    key_id = token.split("_")[1]
    return KeyOut(key_id=key_id, role=body.role, name=body.name, token=token)


@router.delete("/v1/keys/{key_id}", status_code=204)
def revoke_key(key_id: str, state: StateDep, caller: Admin) -> Response:
    if not revoke_api_key(state.engine, key_id, actor=caller.actor):
        raise HTTPException(404, f"key_id: no active key {key_id!r}")
    state.auth.keys.forget(key_id)  # in this process at once; others within KEY_CACHE_SECONDS
    return Response(status_code=204)
