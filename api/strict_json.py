"""Request bodies parsed strictly and validation errors answered briefly.

Bodies are parsed by orjson, which refuses NaN and Infinity literals, numbers beyond a double
and lone surrogates; strings that hold NUL are refused too (a database column cannot store
them). A 422 lists each error's location and message with at most a short excerpt of the input,
never the whole of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

EXCERPT_CHARS = 80


def _nul_path(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first string holding NUL is, as a location; None when there is none."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_path(key, (*path, "<key>")) or _nul_path(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, (*path, index))
            if found is not None:
                return found
    return None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            parsed = orjson.loads(body)  # its JSONDecodeError is json's: FastAPI answers 422
            where = _nul_path(parsed)
            if where is not None:
                location = ".".join(str(part) for part in ("body", *where))
                raise json.JSONDecodeError(f"{location}: a string holds a NUL character", "", 0)
            self._json = parsed
        return self._json


class StrictJsonRoute(APIRoute):
    """The API's routes: bodies through :class:`StrictJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field; the input only as a short excerpt (never echoed whole)."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        message = str(error.get("msg", ""))
        context = error.get("ctx") or {}
        if "error" in context:
            message = f"{message}: {context['error']}"
        item = {"loc": [str(p) for p in error.get("loc", ())], "msg": message[:300]}
        if error.get("input") not in (None, {}):
            item["input"] = _excerpt(error["input"])
        errors.append(item)
    return JSONResponse({"detail": errors}, status_code=422)
