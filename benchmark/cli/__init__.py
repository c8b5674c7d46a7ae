"""The ``bench`` command: one typer sub-app per noun (data, methods, run, leaderboard)."""

from __future__ import annotations

import typer

from .. import __version__

app = typer.Typer(
    name="bench",
    help="platebench: benchmark batch-effect correction for Cell Painting MoA classification "
         "on new plates, batches and labs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"platebench {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """platebench command line."""


def _register_subapps() -> None:
    """Attach every sub-app (each adds its commands to ``app``); a sub-app that fails to import fails ``bench``."""
    from . import data, leaderboard, methods, report, run, sweep, verify

    for module in (data, methods, run, leaderboard, sweep, verify, report):
        module.attach(app)


_register_subapps()
