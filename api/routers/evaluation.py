"""POST /v1/flags/evaluate and /v1/flags/evaluate/batch: the values apps get, evaluated by the
server exactly as GrowthBook's SDKs evaluate the payload (docs/design.md §16)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Response

from api.deps import Assigner, StateDep
from api.flag_evaluation import evaluate
from api.schemas import EvaluateBatchIn, EvaluateBatchOut, EvaluateIn, UserFlags
from api.state import CatalogSnapshot
from api.strict_json import StrictJsonRoute
from config.catalog import Flag

router = APIRouter(prefix="/v1/flags", tags=["flag evaluation"], route_class=StrictJsonRoute)


def _flags(snapshot: CatalogSnapshot, keys: list[str] | None) -> list[Flag]:
    by_key = {flag.key: flag for flag in snapshot.catalog.flags}
    if keys is None:
        return list(by_key.values())
    unknown = sorted(set(keys) - set(by_key))
    if unknown:
        raise HTTPException(404, f"flags: unknown flags {unknown[:10]}")
    return [by_key[key] for key in dict.fromkeys(keys)]


def _user(
    snapshot: CatalogSnapshot, flags: list[Flag], user_id: str, attributes: dict[str, Any]
) -> dict[str, Any]:
    values = {flag.key: evaluate(snapshot, flag, user_id, attributes).as_json() for flag in flags}
    return {"user_id": user_id, "flags": values}


@router.post("/evaluate", response_model=UserFlags)
async def evaluate_flags(body: EvaluateIn, state: StateDep, _caller: Assigner) -> Response:
    snapshot = await state.current_catalog()
    result = _user(snapshot, _flags(snapshot, body.flags), body.user_id, body.attributes)
    return Response(orjson.dumps(result), media_type="application/json")


@router.post("/evaluate/batch", response_model=EvaluateBatchOut)
async def evaluate_batch(body: EvaluateBatchIn, state: StateDep, _caller: Assigner) -> Response:
    """Up to 1,000 users; evaluated and encoded off the event loop."""
    snapshot = await state.current_catalog()
    flags = _flags(snapshot, body.flags)

    def run() -> bytes:
        results = [_user(snapshot, flags, item.user_id, item.attributes) for item in body.items]
        return orjson.dumps({"results": results})

    return Response(await asyncio.to_thread(run), media_type="application/json")
