"""``bench leaderboard``: rebuild LEADERBOARD.md and its figures from the run records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..leaderboard.build import BASELINE, DEFAULT_OUT, build_leaderboard
from ..records import DEFAULT_RESULTS
from .common import handle_errors


@handle_errors
def leaderboard(
    results: Annotated[Path, typer.Option("--results", help="Folder of run records.")] = DEFAULT_RESULTS,
    out: Annotated[Path, typer.Option("--out", help="Markdown file to write (figures go next to it).")]
    = DEFAULT_OUT,
    include_quick: Annotated[bool, typer.Option("--include-quick", help="Also count --quick smoke runs.")]
    = False,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw the accuracy figure.")] = True,
    baseline: Annotated[str, typer.Option(help="Method the paired differences are taken to.")] = BASELINE,
) -> None:
    """Rebuild the leaderboard from the run records alone, recomputing every metric from the predictions files
    (a record whose stored metrics disagree is refused)."""
    result = build_leaderboard(results, out, include_quick=include_quick, figures=figures,
                               baseline=baseline, verify_metrics=True)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {result.markdown_path} from {result.n_records} run records"
               + (f"; figures: {', '.join(map(str, result.figures))}" if result.figures else ""))


def attach(app: typer.Typer) -> None:
    app.command("leaderboard")(leaderboard)
