"""Signing in to the console: the API key itself in an HttpOnly, SameSite=Strict cookie scoped
to ``/ui``, checked on every page by the API's own authenticator and role matrix. Forms carry a
CSRF token derived from the key, which a page on another origin cannot know."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request

from api.auth import PERMISSIONS, Caller, Permission
from api.state import ApiState

COOKIE = "xpstream_console"
SIGN_IN = "/ui/sign-in"


class SignInRequired(Exception):
    """No key, or one the API refuses: the page sends the browser to the sign-in form."""


@dataclass(frozen=True)
class Visitor:
    caller: Caller
    csrf: str

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS.get(self.caller.role, frozenset())


def csrf_token(token: str) -> str:
    return hmac.new(b"xpstream-console-csrf", token.encode(), hashlib.sha256).hexdigest()


async def visitor(request: Request) -> Visitor:
    token = request.cookies.get(COOKIE)
    state: ApiState = request.app.state.xp
    caller = await state.auth.caller(token) if token else None
    if token is None or caller is None:
        raise SignInRequired
    return Visitor(caller, csrf_token(token))


VisitorDep = Annotated[Visitor, Depends(visitor)]


def acting(permission: Permission) -> object:
    """A form post: the CSRF token must match the signed-in key, and its role must allow the
    action (403 otherwise, as the API answers)."""

    async def dependency(
        request: Request, who: VisitorDep, csrf: Annotated[str, Form()]
    ) -> Visitor:
        if not hmac.compare_digest(csrf, who.csrf):
            raise HTTPException(403, "csrf: the form does not belong to this session")
        if not who.may(permission):
            raise HTTPException(403, f"role {who.caller.role!r} may not {permission}")
        return who

    return Depends(dependency)


Developer = Annotated[Visitor, acting("write")]
Administrator = Annotated[Visitor, acting("admin")]
