"""The `xpstream` command line."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from config.settings import Settings, SettingsError, load_settings

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


@app.command()
def demo(users: int = typer.Option(5000, min=1, help="How many users to simulate.")) -> None:
    """Run the walk of an event on embedded defaults and print per-variant user counts."""
    from jobs.demo import run_demo

    run_demo(settings_or_exit(), users, console)


@app.command("analyze")
def analyze_command(
    input_path: str = typer.Option(
        ..., "--input", help="JSON file of sufficient statistics, or -."
    ),
) -> None:
    """Statistics over sufficient statistics given as JSON; prints the results as JSON."""
    import sys

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


if __name__ == "__main__":
    app()
