"""The `xpstream` command line."""

from __future__ import annotations

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


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None


@app.command()
def demo(users: int = typer.Option(5000, min=1, help="How many users to simulate.")) -> None:
    """Run the walk of an event on embedded defaults and print per-variant user counts."""
    from jobs.demo import run_demo

    run_demo(settings_or_exit(), users, console)


if __name__ == "__main__":
    app()
