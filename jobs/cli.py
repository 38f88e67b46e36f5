"""The `xpstream` command line."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from config.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    help="xpstream: stream-processing analytics for A/B tests and feature flags.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main() -> None:
    """xpstream: stream-processing analytics for A/B tests and feature flags."""


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))


def database(settings: Settings) -> AbstractContextManager[Engine]:
    """The configured database migrated to head, and an engine on it, disposed at the end."""
    from sinks.sql.migrate import migrated_engine

    return migrated_engine(settings.database_url)


@app.command()
def demo(
    users: int = typer.Option(20_000, min=10, help="How many users to simulate."),
    report_path: Path = typer.Option(
        Path("reports/demo.html"), "--report", help="Where to write the HTML report."
    ),
) -> None:
    """The whole walk on embedded defaults: broker, SQLite, three simulated experiments."""
    from jobs.demo import run_demo

    run_demo(settings_or_exit(), users, report_path, console)


@app.command("analyze")
def analyze_command(
    input_path: str = typer.Option(
        ..., "--input", help="JSON file of sufficient statistics, or -."
    ),
) -> None:
    """Statistics over sufficient statistics given as JSON; prints the results as JSON."""
    import orjson

    from jobs.analyze import AnalyzeInputError, parse_input, run_analysis

    try:
        raw = sys.stdin.buffer.read() if input_path == "-" else Path(input_path).read_bytes()
    except OSError as exc:
        fail(f"cannot read --input {input_path}: {exc.strerror}")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(f"--input {input_path} is not valid JSON: {exc}")
    try:
        request = parse_input(payload)
    except AnalyzeInputError as exc:
        fail(f"invalid analysis input: {exc}")
    sys.stdout.buffer.write(orjson.dumps(run_analysis(request), option=orjson.OPT_INDENT_2) + b"\n")


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the newest Alembic revision."""
    from sqlalchemy import make_url

    from sinks.sql.migrate import upgrade_to_head

    settings = settings_or_exit()
    upgrade_to_head(settings.database_url)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    console.print(f"database at head: {shown}")


catalog_app = typer.Typer(help="Experiments, flags, metrics and guardrails.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("load")
def catalog_load(path: Path = typer.Argument(..., help="Catalog as YAML or JSON.")) -> None:
    """Validate a catalog file and store it; an invalid file changes nothing."""
    from config.catalog import CatalogError, load_catalog_file
    from sinks.sql.store import save_catalog

    settings = settings_or_exit()
    try:
        catalog = load_catalog_file(path)
    except CatalogError as exc:
        fail(f"invalid catalog: {exc}")
    with database(settings) as engine:
        save_catalog(engine, catalog)
    console.print(
        f"loaded {len(catalog.metrics)} metrics, {len(catalog.flags)} flags, "
        f"{len(catalog.experiments)} experiments from {path}"
    )


@app.command()
def replay(
    path: Path = typer.Argument(..., help="Events, one JSON object per line."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for the pipeline to flush."),
) -> None:
    """Send every line through the pipeline, wait until flushed, then analyse once."""
    from jobs.replay import read_lines

    settings = settings_or_exit()
    try:
        lines = read_lines(path)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    with database(settings) as engine:
        _replay(settings, engine, lines, as_json, timeout)


def _replay(
    settings: Settings, engine: Engine, lines: list[bytes], as_json: bool, timeout: float
) -> None:
    import asyncio

    import orjson
    from rich.progress import Progress

    from jobs.replay import replay as run_replay
    from pipelines.embedded_broker import broker_url
    from sinks.sql.store import load_catalog, reset_pipeline_state

    if not load_catalog(engine).experiments:
        fail("the catalog is empty: run `xpstream catalog load FILE` first")
    if not settings.kafka_url:
        # The embedded broker keeps nothing between runs: recompute from scratch.
        reset_pipeline_state(engine)
    settings = _embedded_flavor(settings)
    with (
        broker_url(settings.kafka_url) as bootstrap,
        Progress(console=err_console, transient=True, disable=as_json) as progress,
    ):
        task = progress.add_task("replaying", total=len(lines))
        counts = asyncio.run(
            run_replay(
                settings,
                bootstrap,
                engine,
                lines,
                timeout=timeout,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        )
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(counts) + b"\n")
    else:
        console.print(counts)
        _print_reports(settings, engine)


@app.command()
def report(
    experiment: str = typer.Argument(..., help="Experiment key."),
    output_format: str = typer.Option("text", "--format", help="text, json or html."),
) -> None:
    """Cumulative per-arm statistics and results for one experiment."""
    import orjson

    from jobs.report import UnknownExperimentError, build_report, render_html, render_text
    from sinks.sql.store import load_catalog

    if output_format not in ("text", "json", "html"):
        fail(f"--format: {output_format!r} is not text, json or html")
    settings = settings_or_exit()
    with database(settings) as engine:
        catalog = load_catalog(engine)
        try:
            result = build_report(engine, catalog, experiment, settings.alpha, settings.tau)
        except UnknownExperimentError:
            fail(f"unknown experiment {experiment!r}")
        if output_format == "json":
            sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        elif output_format == "html":
            sys.stdout.write(render_html(settings, engine, [experiment]))
        else:
            console.print(render_text(result), highlight=False)


@app.command()
def run(
    only: str = typer.Option(
        "all", help="all, workers, analyzer, publisher, shipper or scheduler."
    ),
) -> None:
    """Workers, analyzer, alert publisher and scheduler (Ctrl-C stops); --only runs one."""
    from jobs.run import ROLES
    from jobs.run import run as run_roles

    if only not in ROLES:
        fail(f"--only: {only!r} is not one of {', '.join(ROLES)}")
    run_roles(_embedded_flavor(settings_or_exit()), only)


@app.command()
def alerts(
    as_json: bool = typer.Option(False, "--json", help="Print the alerts as a JSON array."),
) -> None:
    """Guardrail and SRM alerts, newest first."""
    import orjson

    from sinks.sql.alerts import list_alerts

    with database(settings_or_exit()) as engine:
        rows = list_alerts(engine)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        return
    if not rows:
        console.print("no alerts")
    for alert in rows:
        console.print(render_alert(alert), highlight=False)


def render_alert(alert: dict[str, Any]) -> str:
    where = f"{alert['experiment']}"
    if alert["metric"]:
        where += f"/{alert['metric']} ({alert['variant']})"
    detail = ""
    if alert["kind"] == "guardrail_breach" and alert["rel_ci"]:
        low, high = alert["rel_ci"]
        detail = f"lift {alert['rel_effect']:+.2%} in [{low:+.2%}, {high:+.2%}]"
    elif alert["kind"] == "srm_mismatch":
        detail = f"SRM p={alert.get('srm_p_value', float('nan')):.3g} arms {alert.get('arm_sizes')}"
    return (
        f"{alert['created_at']}  {alert['kind']:<17} {where}  {detail}  "
        f"action: {alert['action_taken']}"
    )


@app.command("kinesis-bridge")
def kinesis_bridge(
    stream: str = typer.Option("", help="Kinesis stream (default: XPSTREAM_KINESIS_STREAM)."),
    region: str = typer.Option("", help="AWS region (default: the usual AWS chain)."),
    lease_seconds: float = typer.Option(10.0, min=1.0, help="Shard lease length."),
) -> None:
    """Forward a Kinesis stream's records into the events topic, checkpointed in SQL; several
    bridges share the shards through leases (Ctrl-C stops and releases them)."""
    from jobs.run import run_kinesis_bridge

    settings = settings_or_exit()
    name = stream or settings.kinesis_stream
    if not name:
        fail("--stream: give a stream name or set XPSTREAM_KINESIS_STREAM")
    run_kinesis_bridge(_embedded_flavor(settings), name, region or None, lease_seconds)


dashboards_app = typer.Typer(help="OpenSearch Dashboards.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.command("install")
def dashboards_install(
    url: str = typer.Option(..., help="OpenSearch Dashboards URL, e.g. http://127.0.0.1:5601."),
    as_json: bool = typer.Option(False, "--json", help="Print the import result as JSON."),
) -> None:
    """Import the index patterns, visualisations and dashboard (overwriting earlier copies)."""
    import orjson
    import requests

    from sinks.opensearch.dashboards import install

    settings = settings_or_exit()
    auth = (
        (settings.opensearch_username, settings.opensearch_password)
        if settings.opensearch_username
        else None
    )
    verify: bool | str = settings.opensearch_ca_certs or settings.opensearch_verify_certs
    try:
        result = install(url, settings.opensearch_prefix, auth, verify)
    except requests.RequestException as exc:
        fail(f"--url {url}: could not import the saved objects: {exc}")
    if not result.get("success", False):
        fail(f"--url {url}: the import reported errors: {result.get('errors')}")
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    else:
        console.print(f"imported {result.get('successCount', 0)} saved objects into {url}")


@app.command("api")
def api_command(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to bind."),
) -> None:
    """The HTTP API (uvicorn); OpenAPI documentation at /docs."""
    from api.app import create_app
    from api.server import serve
    from pipelines.embedded_broker import broker_url

    settings = settings_or_exit()
    with database(settings) as engine, broker_url(settings.kafka_url) as bootstrap:
        serve(create_app(settings, engine, bootstrap), host, port, settings)


keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="client, sdk, viewer, analyst, developer or admin."),
    name: str = typer.Option("", help="What the key is for."),
    encrypt: bool = typer.Option(
        False, "--encrypt", help="client keys: serve the SDK payload encrypted."
    ),
) -> None:
    """A new API key, printed once on its own last line (only its hash is stored). A client
    key (public: it reads only the SDK payload) made with --encrypt also prints, on the line
    before, the decryption key its SDKs need."""
    from api.sdk_payload import new_encryption_key
    from sinks.sql.keys import ROLES, create_api_key

    if role not in ROLES:
        fail(f"--role: {role!r} is not one of {', '.join(ROLES)}")
    if encrypt and role != "client":
        fail("--encrypt: only client keys have an encrypted payload")
    payload_key = new_encryption_key() if encrypt else None
    with database(settings_or_exit()) as engine:
        token = create_api_key(engine, role, name, payload_key=payload_key)
    err_console.print(f"created a {role} key; it is shown once:")
    if payload_key is not None:
        sys.stdout.write(f"decryption key: {payload_key}\n")
    sys.stdout.write(token + "\n")


def _embedded_flavor(settings: Settings) -> Settings:
    """The embedded broker is Tansu: at-least-once, with its end-offset workaround."""
    if settings.kafka_url:
        return settings
    return settings.model_copy(update={"kafka_flavor": "tansu"})


def _print_reports(settings: Settings, engine: Any) -> None:
    from jobs.report import build_report, render_text
    from sinks.sql.store import load_catalog

    catalog = load_catalog(engine)
    for experiment in catalog.experiments:
        report_data = build_report(engine, catalog, experiment.key, settings.alpha, settings.tau)
        console.print(render_text(report_data), highlight=False)
        console.print()


def _register_lifecycle() -> None:
    from jobs.cli_lifecycle import experiments_app, rollouts_app

    app.add_typer(experiments_app, name="experiments", no_args_is_help=True)
    app.add_typer(rollouts_app, name="rollouts", no_args_is_help=True)


_register_lifecycle()

if __name__ == "__main__":
    app()
