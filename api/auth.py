"""API keys as a dependency: 401 without a valid key, 403 when its role lacks the permission."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request
from sqlalchemy import Engine

from sinks.sql.keys import resolve_api_key

Permission = Literal["assign", "ingest", "read", "analyse", "write", "admin"]

PERMISSIONS: dict[str, frozenset[str]] = {
    "sdk": frozenset({"assign", "ingest"}),
    "viewer": frozenset({"read"}),
    "analyst": frozenset({"read", "analyse"}),
    "developer": frozenset({"read", "analyse", "write"}),
    "admin": frozenset({"assign", "ingest", "read", "analyse", "write", "admin"}),
}
KEY_CACHE_SECONDS = 5.0  # how long a revoked key may still be accepted by a running API

SECURITY_SCHEME = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `xpstream keys create --role …`",
    }
}


@dataclass(frozen=True)
class Caller:
    key_id: str
    role: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


class KeyCache:
    """Verified keys for a few seconds, so a hot endpoint does not hit the database each time."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Caller | None]] = {}

    def lookup(self, token: str) -> tuple[bool, Caller | None]:
        """(found, caller): whether ``token`` was resolved in the last few seconds, and to what."""
        hit = self._entries.get(token)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def remember(self, token: str, caller: Caller | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + KEY_CACHE_SECONDS, caller)


def _bearer(request: Request) -> str:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401, "missing API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
        )
    return token.strip()


def _permitted(caller: Caller | None, permission: Permission) -> Caller:
    if caller is None:
        raise HTTPException(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
    if permission not in PERMISSIONS.get(caller.role, frozenset()):
        raise HTTPException(403, f"role {caller.role!r} may not {permission}")
    return caller


async def authorize(request: Request, permission: Permission) -> Caller:
    """The caller behind the request's bearer key, if its role has ``permission``; a key not
    seen lately is looked up in a thread, off the event loop.

    Reads the header itself rather than through fastapi.security's HTTPBearer (the scheme is
    declared in the OpenAPI document by api.app)."""
    token = _bearer(request)
    state = request.app.state.xp
    found, caller = state.keys.lookup(token)
    if not found:
        caller = await asyncio.to_thread(_resolve, state.engine, token)
        state.keys.remember(token, caller)
    return _permitted(caller, permission)


def _resolve(engine: Engine, token: str) -> Caller | None:
    found = resolve_api_key(engine, token)
    return Caller(*found) if found else None


def requires(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """``authorize`` as a dependency: ``Depends(requires("read"))``."""

    async def dependency(request: Request) -> Caller:
        return await authorize(request, permission)

    return dependency
