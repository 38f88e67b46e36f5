"""API keys as a dependency: 401 without a valid key, 403 when its role lacks the permission."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request

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

    def get(self, token: str, resolve: Callable[[str], tuple[str, str] | None]) -> Caller | None:
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = resolve(token)
        caller = Caller(*found) if found else None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (now + KEY_CACHE_SECONDS, caller)
        return caller


def authorize(request: Request, permission: Permission) -> Caller:
    """The caller behind the request's bearer key, if its role has ``permission``.

    Reads the header itself rather than through fastapi.security's HTTPBearer (the scheme is
    declared in the OpenAPI document by api.app)."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401, "missing API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
        )
    state = request.app.state.xp
    caller = state.keys.get(token.strip(), lambda key: resolve_api_key(state.engine, key))
    if caller is None:
        raise HTTPException(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
    if permission not in PERMISSIONS.get(caller.role, frozenset()):
        raise HTTPException(403, f"role {caller.role!r} may not {permission}")
    return caller


def requires(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """``authorize`` as a dependency: ``Depends(requires("read"))``."""

    async def dependency(request: Request) -> Caller:
        return authorize(request, permission)

    return dependency
