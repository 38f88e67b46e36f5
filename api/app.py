"""The FastAPI application: thin routers, auth as dependencies, schemas apart from tables."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from swagger_ui_bundle import swagger_ui_path

from api.auth import RETRY_AFTER_SECONDS, SECURITY_SCHEME, Authentication
from api.catalog_watch import CatalogWatch
from api.console import pages as console
from api.console.session import SIGN_IN, SignInRequired
from api.metrics import MetricsAndLimits, store_families
from api.routers import assignments, catalog, evaluation, events, ops, reports, rollouts, sdk
from api.state import ApiState, DatabaseUnavailableError
from api.strict_json import validation_error
from config.settings import Settings
from pipelines.events import MAX_ENVELOPE_BYTES
from sinks.opensearch.sink import backlog as search_backlog
from sinks.sql.alerts import count_alerts
from sinks.sql.results import rolled_back_flags
from sinks.sql.store import counter_totals, unavailable

log = logging.getLogger(__name__)


def create_app(settings: Settings, engine: Engine, bootstrap: str) -> FastAPI:
    state = ApiState(settings=settings, engine=engine, bootstrap=bootstrap)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        app.state.watch = CatalogWatch(state)  # on the server's own event loop
        yield
        await app.state.watch.stop()
        await state.close()

    app = FastAPI(
        docs_url=None,  # served below from the API's own copy of Swagger UI
        redoc_url=None,
        title="xpstream",
        version="0.1.0",
        summary="Assignments, event ingest, experiments, flags, reports and alerts.",
        lifespan=lifespan,
    )
    app.state.xp = state
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="xpstream API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.router.routes.append(assignments.assignments_route)
    for module in (assignments, events, evaluation, catalog, rollouts, reports, ops, sdk):
        app.include_router(module.router)
    app.include_router(console.router)

    @app.exception_handler(SignInRequired)
    async def sign_in_first(_request: Request, _exc: SignInRequired) -> RedirectResponse:
        return RedirectResponse(SIGN_IN, status_code=303)

    def collect() -> list[Any]:
        return store_families(
            len(rolled_back_flags(engine)),
            counter_totals(engine, "dead_lettered"),
            count_alerts(engine),
            search_backlog(engine),
        )

    state.metrics.add_store_collector(collect)

    app.add_exception_handler(RequestValidationError, validation_error)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(DatabaseUnavailableError)
    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        """Reads the last catalog can answer still do; what needs the database waits for it."""
        if not isinstance(exc, DatabaseUnavailableError) and not unavailable(exc):
            return await unexpected(request, exc)
        state.outage.failed(exc)  # one warning per outage, the rest at DEBUG
        return JSONResponse(
            {"detail": "the database is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    # Added last, runs first: counted and capped, then authenticated before any body is read.
    app.add_middleware(Authentication, authenticator=state.auth)
    app.add_middleware(MetricsAndLimits, metrics=state.metrics, max_body=MAX_ENVELOPE_BYTES)

    def openapi() -> dict[str, Any]:
        """The generated schema plus the bearer-key scheme on every /v1 operation."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema["paths"] = {"/v1/assignments": assignments.OPENAPI, **schema["paths"]}
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEME
            for path, operations in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
