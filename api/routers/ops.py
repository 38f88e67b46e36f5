"""Liveness, readiness and Prometheus metrics (unauthenticated, for load balancers and scrapers),
and API key management (admin)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import Admin, StateDep
from api.schemas import KeyIn, KeyOut
from api.state import ApiState
from sinks.sql.keys import create_api_key, revoke_api_key

router = APIRouter(tags=["operations"])
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
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/keys", status_code=201, response_model=KeyOut)
def create_key(body: KeyIn, state: StateDep, _caller: Admin) -> KeyOut:
    token = create_api_key(state.engine, body.role, body.name)
    key_id = token.split("_")[1]
    return KeyOut(key_id=key_id, role=body.role, name=body.name, token=token)


@router.delete("/v1/keys/{key_id}", status_code=204)
def revoke_key(key_id: str, state: StateDep, _caller: Admin) -> Response:
    if not revoke_api_key(state.engine, key_id):
        raise HTTPException(404, f"key_id: no active key {key_id!r}")
    return Response(status_code=204)
