"""Typed dependencies of the routers: the process's state, a database session, the caller by
role (as the FastAPI full-stack template's ``deps.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.auth import Caller, requires
from api.state import ApiState


async def get_state(request: Request) -> ApiState:
    """Async, so FastAPI does not hop to a worker thread to hand over a reference."""
    state: ApiState = request.app.state.xp
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """A session for one request; routes that take it are plain ``def`` (run in a thread),
    so database calls never block the event loop."""
    with Session(state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

Assigner = Annotated[Caller, Depends(requires("assign"))]
Ingester = Annotated[Caller, Depends(requires("ingest"))]
Reader = Annotated[Caller, Depends(requires("read"))]
Analyst = Annotated[Caller, Depends(requires("analyse"))]
Writer = Annotated[Caller, Depends(requires("write"))]
Admin = Annotated[Caller, Depends(requires("admin"))]
