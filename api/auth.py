"""API keys: checked before a request's body is read, by the :class:`Authentication`
middleware (401 without a valid key, 429 for an address that keeps failing), and by role in
the routes' dependencies (403 when the key's role lacks the permission)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import orjson
from fastapi import HTTPException, Request
from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from sinks.outage import Outage
from sinks.sql.keys import resolve_api_key

log = logging.getLogger(__name__)
Permission = Literal["assign", "ingest", "read", "analyse", "write", "admin"]

PERMISSIONS: dict[str, frozenset[str]] = {
    "client": frozenset(),  # public: reads only the SDK payload (/api/features, /sub)
    "sdk": frozenset({"assign", "ingest"}),
    "viewer": frozenset({"read"}),
    "analyst": frozenset({"read", "analyse"}),
    "developer": frozenset({"read", "analyse", "write"}),
    "admin": frozenset({"assign", "ingest", "read", "analyse", "write", "admin"}),
}
RETRY_AFTER_SECONDS = 5  # what a 503 for an away database asks clients to wait
KEY_CACHE_SECONDS = 5.0  # a key revoked by another API process works here this long at most
KEY_CACHE_SIZE = 10_000
# ``xps_<key_id: 12 hex>_<secret: 43 url-safe base64>``: anything else is refused unread.
TOKEN = re.compile(r"xps_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
FAILURES_ALLOWED = 20  # failed authentications per address and window before 429
FAILURE_WINDOW_SECONDS = 60.0
TRACKED_ADDRESSES = 10_000

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
    payload_key: str | None = None  # a client key's payload encryption key

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


class KeyCache:
    """Keys verified in the last few seconds, so a hot endpoint does not hit the database each
    time. Keyed by a digest of the token (no secret is kept), bounded (least recently used
    goes), and only successes are kept: a failure is never cached."""

    def __init__(self, size: int = KEY_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[float, Caller]] = OrderedDict()

    def lookup(self, token: str, stale: bool = False) -> Caller | None:
        """The key verified lately; with ``stale``, also one whose few seconds have passed
        (while the database cannot be asked, the last answer stands)."""
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._entries.get(digest)
        if hit is None or (hit[0] <= time.monotonic() and not stale):
            return None
        self._entries.move_to_end(digest)
        return hit[1]

    def remember(self, token: str, caller: Caller) -> None:
        digest = hashlib.sha256(token.encode()).digest()
        self._entries[digest] = (time.monotonic() + KEY_CACHE_SECONDS, caller)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """A revoked key stops working in this process at once."""
        for digest in [d for d, (_, c) in self._entries.items() if c.key_id == key_id]:
            del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class FailedAuthLimiter:
    """Failed authentications per client address in fixed windows: past ``allowed`` in one
    window, the address's failures answer 429 until the window ends (valid keys still work).
    At most ``addresses`` are tracked; the oldest windows go first."""

    allowed: int = FAILURES_ALLOWED
    window: float = FAILURE_WINDOW_SECONDS
    addresses: int = TRACKED_ADDRESSES
    _windows: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may fail again without 429; 0 when it may now."""
        entry = self._windows.get(address)
        if entry is None or entry[1] <= self.allowed:
            return 0.0
        return max(0.0, entry[0] + self.window - time.monotonic())

    def failed(self, address: str) -> int:
        """Counts a failure; returns the failures of the address in its current window."""
        now = time.monotonic()
        entry = self._windows.get(address)
        if entry is None or entry[0] + self.window <= now:
            entry = self._windows[address] = [now, 0.0]
            self._windows.move_to_end(address)
            while len(self._windows) > self.addresses:
                self._windows.popitem(last=False)
        entry[1] += 1
        return int(entry[1])


@dataclass
class Authenticator:
    engine: Engine
    keys: KeyCache = field(default_factory=KeyCache)
    limiter: FailedAuthLimiter = field(default_factory=FailedAuthLimiter)
    outage: Outage = field(default_factory=lambda: Outage("API key check", 0.0))

    async def caller(self, token: str) -> Caller | None:
        """The key behind ``token``: malformed tokens never reach the cache or the database,
        and a key not seen lately is looked up in a thread, off the event loop."""
        if TOKEN.fullmatch(token) is None:
            return None
        caller = self.keys.lookup(token)
        if caller is None:
            try:
                found = await asyncio.to_thread(resolve_api_key, self.engine, token)
            except Exception as error:  # the database is away: keys seen before still work
                self.outage.failed(error)
                caller = self.keys.lookup(token, stale=True)
                if caller is None:
                    raise HTTPException(
                        503,
                        "the key cannot be checked now: the database is away; retry",
                        {"Retry-After": str(RETRY_AFTER_SECONDS)},
                    ) from None
                return caller
            self.outage.recovered()
            if found is not None:
                caller = Caller(*found)
                self.keys.remember(token, caller)
        return caller

    def refused(self, address: str, token: str, reason: str) -> HTTPException:
        """401, or 429 with Retry-After for an address over its failures; logged with the key
        id alone (never the secret), once per address and window."""
        count = self.limiter.failed(address)
        match = TOKEN.fullmatch(token)
        key = f"key {match.group(1)}" if match else "no well-formed key"
        if count == 1 or count == self.limiter.allowed + 1:
            log.warning(
                "failed authentication from %s (%s: %s)%s",
                address,
                key,
                reason,
                "; throttled" if count > self.limiter.allowed else "",
            )
        wait = self.limiter.retry_after(address)
        if wait > 0:
            return HTTPException(
                429,
                "too many failed authentications from this address",
                {"Retry-After": str(max(1, round(wait)))},
            )
        return HTTPException(401, reason, {"WWW-Authenticate": "Bearer"})


def bearer_token(headers: dict[bytes, bytes]) -> str | None:
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authentication:
    """Pure ASGI, before anything reads the body: every ``/v1`` request needs a valid key, and
    its caller is left in ``scope["state"]`` for the routes' role checks."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, prefix: str = "/v1/") -> None:
        self.app, self.authenticator, self.prefix = app, authenticator, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        token = bearer_token(dict(scope.get("headers") or []))
        address = (scope.get("client") or ("unknown", 0))[0]
        if token is None:
            error = self.authenticator.refused(
                address, "", "missing API key: send Authorization: Bearer <key>"
            )
        else:
            try:
                caller = await self.authenticator.caller(token)
            except HTTPException as unavailable:
                await _send_error(send, unavailable)
                return
            if caller is not None:
                scope.setdefault("state", {})["caller"] = caller
                await self.app(scope, receive, send)
                return
            error = self.authenticator.refused(address, token, "invalid or revoked API key")
        await _send_error(send, error)


async def _send_error(send: Send, error: HTTPException) -> None:
    body = orjson.dumps({"detail": error.detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def authorize(request: Request, permission: Permission) -> Caller:
    """The caller :class:`Authentication` found, if its role has ``permission``."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:  # a route outside the middleware's prefix asked for a key
        raise HTTPException(401, "missing API key", {"WWW-Authenticate": "Bearer"})
    if permission not in PERMISSIONS.get(caller.role, frozenset()):
        raise HTTPException(403, f"role {caller.role!r} may not {permission}")
    return caller


def requires(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """``authorize`` as a dependency: ``Depends(requires("read"))``."""

    async def dependency(request: Request) -> Caller:
        return authorize(request, permission)

    return dependency
