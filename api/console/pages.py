"""The console's pages and forms (docs/design.md §21). Every number comes from the service the
API uses for it; every action calls the API's own service, so roles, lifecycle rules and the
audit log are the same as through the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from api import catalog_service, rollout_service
from api.catalog_service import Action
from api.console.charts import lift_figures, users_figure
from api.console.session import (
    COOKIE,
    SIGN_IN,
    Administrator,
    Developer,
    Visitor,
    VisitorDep,
)
from api.deps import StateDep
from api.report_service import experiment_lift, experiment_of, experiment_report
from api.rollout_service import Move
from api.state import ApiState
from config.catalog import Catalog
from sinks.sql.alerts import list_alerts
from sinks.sql.audit import list_audit
from sinks.sql.results import status_badges
from sinks.sql.store import counter_totals

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATUSES = ("draft", "scheduled", "running", "paused", "stopped")
CHART_POINTS = 240  # points per line: a month of hourly windows at three hours a point


def decision(result: dict[str, Any], higher_is_better: bool) -> str:
    """What the results table colours: a significant effect in the metric's good direction
    wins, in the other loses; anything else is not decided yet."""
    effect = result.get("rel_effect")
    if not result.get("significant") or effect is None:
        return "inconclusive"
    return "win" if (effect > 0) == higher_is_better else "loss"


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def acted(request: Request, who: Any, url: str, action: Callable[[], object]) -> Response:
    """Run an action; a refusal of the service (409 naming the rule, 404, 422) is shown on a
    page with its status, as the API would answer it."""
    try:
        action()
    except HTTPException as refused:
        return page(
            request, "refused.html", refused.status_code, who=who, detail=refused.detail, url=url
        )
    request.app.state.xp.catalog_changed()
    return back(url)


@router.get("")
def home() -> RedirectResponse:
    return back("/ui/experiments")


@router.get("/sign-in")
def sign_in_form(request: Request) -> HTMLResponse:
    return page(request, "sign_in.html", who=None, error=None)


@router.post("/sign-in")
async def sign_in(request: Request, state: StateDep, key: Annotated[str, Form()]) -> Response:
    caller = await state.auth.caller(key.strip())
    if caller is None:
        return page(request, "sign_in.html", 401, who=None, error="This key is not valid.")
    response = back("/ui/experiments")
    response.set_cookie(
        COOKIE,
        key.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )
    return response


@router.post("/sign-out")
def sign_out() -> RedirectResponse:
    response = back(SIGN_IN)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript")


@router.get("/experiments")
def experiments(
    request: Request, state: StateDep, who: VisitorDep, status: str | None = None
) -> HTMLResponse:
    catalog = state.catalog().catalog
    users = counter_totals(state.engine, "users")
    badges = status_badges(state.engine)
    nothing = {"srm": None, "breached": 0, "guarded": 0}
    rows = [
        {
            "experiment": experiment,
            "users": int(users.get(experiment.key, 0.0)),
            **badges.get(experiment.key, nothing),
        }
        for experiment in catalog.experiments
        if not status or experiment.status == status
    ]
    return page(request, "experiments.html", who=who, rows=rows, status=status, statuses=STATUSES)


@router.get("/experiments/{key}")
def experiment_page(request: Request, key: str, state: StateDep, who: VisitorDep) -> HTMLResponse:
    return HTMLResponse(results_html(state, [key], who, request))


def results_html(
    state: ApiState, keys: list[str], who: Visitor | None = None, request: Request | None = None
) -> str:
    """The results of experiments; without a request, the self-contained file of `xpstream
    report --format html` and of the demo (plotly.js inline, no actions)."""
    catalog = state.catalog().catalog
    sections = [_section(state, catalog, key) for key in keys]
    context: dict[str, Any] = {
        "who": who,
        "sections": sections,
        "figures": json.dumps([s.pop("figures") for s in sections]),
        "inline_js": PLOTLY_JS.read_text() if request is None else None,
    }
    if request is not None:
        context["request"] = request
    return templates.get_template("experiment.html").render(context)


def _section(state: ApiState, catalog: Catalog, key: str) -> dict[str, Any]:
    experiment = experiment_of(state, key)
    with Session(state.engine) as session:
        report = experiment_report(state, session, key)
    points = experiment_lift(state, key, CHART_POINTS)
    results = []
    widest = 0.0
    for result in report.results:
        metric = catalog.metric(result["metric"])
        interval = result.get("rel_ci")  # the interval the decision ("significant") is made on
        if interval and all(v is not None for v in interval):
            widest = max(widest, *(abs(v) for v in interval))
        results.append(
            {**result, "decision": decision(result, metric.higher_is_better), "interval": interval}
        )
    return {
        "experiment": experiment,
        "report": report,
        "results": results,
        "scale": min(max(widest, 0.01), 1.0),
        "figures": [*lift_figures(experiment, points), users_figure(experiment, points)],
        "alerts": [a for a in list_alerts(state.engine) if a.get("experiment") == key],
    }


@router.post("/experiments/{key}/schedule")
def schedule(
    request: Request,
    key: str,
    state: StateDep,
    who: Developer,
    start_at: Annotated[str, Form()] = "",
    end_at: Annotated[str, Form()] = "",
) -> Response:
    def parse(value: str, name: str) -> datetime | None:
        if not value.strip():
            return None
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise HTTPException(422, f"{name}: not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise HTTPException(422, f"{name}: needs an offset, such as +00:00")
        return moment

    return acted(
        request,
        who,
        f"/ui/experiments/{key}",
        lambda: catalog_service.schedule_experiment(
            state.engine,
            who.caller,
            key,
            parse(start_at, "start_at"),
            parse(end_at, "end_at"),
            None,
        ),
    )


@router.post("/experiments/{key}/{action}")
def move_experiment(
    request: Request, key: str, action: Action, state: StateDep, who: Developer
) -> Response:
    return acted(
        request,
        who,
        f"/ui/experiments/{key}",
        lambda: catalog_service.transition_experiment(state.engine, who.caller, key, action, None),
    )


@router.get("/flags")
def flags(request: Request, state: StateDep, who: VisitorDep) -> HTMLResponse:
    with Session(state.engine) as session:
        listed = catalog_service.flags_public(session)
    rollouts = rollout_service.listing(state.engine)
    active = {r["flag"]: r for r in rollouts if r["state"] in ("running", "paused")}
    return page(
        request,
        "flags.html",
        who=who,
        flags=listed,
        rollouts=rollouts,
        active=active,
        rule_words=rule_words,
    )


def rule_words(rule: dict[str, Any]) -> str:
    """A flag rule as a sentence."""
    when = f" when {json.dumps(rule['condition'])}" if rule.get("condition") else ""
    if "experiment" in rule:
        return f"users in experiment {rule['experiment']}{when} get their variant's value"
    share = rule.get("rollout")
    who = f"{share:.0%} of users{when} get" if share is not None else f"everyone{when} gets"
    return f"{who} {json.dumps(rule.get('value'))}"


@router.post("/flags/{key}/rollback")
def rollback(
    request: Request,
    key: str,
    state: StateDep,
    who: Administrator,
    reason: Annotated[str, Form()] = "rolled back from the console",
) -> Response:
    return acted(
        request,
        who,
        "/ui/flags",
        lambda: catalog_service.set_rolled_back(state.engine, who.caller, key, reason, None),
    )


@router.post("/flags/{key}/restore")
def restore(request: Request, key: str, state: StateDep, who: Administrator) -> Response:
    return acted(
        request,
        who,
        "/ui/flags",
        lambda: catalog_service.set_rolled_back(state.engine, who.caller, key, None, None),
    )


@router.post("/rollouts/{rollout_id}/{action}")
def move_rollout(
    request: Request, rollout_id: int, action: Move, state: StateDep, who: Developer
) -> Response:
    return acted(
        request,
        who,
        "/ui/flags",
        lambda: rollout_service.move(
            state.engine, who.caller, rollout_id, action, "from the console"
        ),
    )


@router.get("/alerts")
def alerts(request: Request, state: StateDep, who: VisitorDep) -> HTMLResponse:
    audit = list_audit(state.engine)[:200] if who.may("analyse") else []
    return page(
        request,
        "alerts.html",
        who=who,
        alerts=list_alerts(state.engine)[:200],
        audit=audit,
    )
