"""``bench verify``: re-run committed records and report how far each re-run lands from its record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import BenchError
from ..records import DEFAULT_RESULTS
from ..protocol.verify import (DEFAULT_TOLERANCE, Verification, environment_differences, fit_seconds, load_verifiable,
                      sample_records, verify_records)
from .common import handle_errors

if TYPE_CHECKING:
    from ..records import Record


def _acc(d) -> str:
    if d is None:
        return "–"
    return f"{d.committed:.4f} → {d.rerun:.4f} ({d.diff:+.2g})"


def print_verification(result: Verification) -> None:
    """The per-run table, the CI table, the notes and a summary line."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title=f"bench verify: re-run − committed (tolerance {result.tolerance:g})")
    for col in ("run", "out-of-domain acc.", "in-domain acc.", "largest other |Δ|", "predictions", "result"):
        table.add_column(col)
    for c in result.runs:
        by_name = {d.name: d for d in c.diffs}
        others = [d for d in c.diffs if d.name not in ("out_of_domain.accuracy", "in_domain.accuracy")]
        worst = max(others, key=lambda d: abs(d.diff) if d.diff == d.diff else float("inf"), default=None)
        over = c.exceeding(result.tolerance)
        status = ("[red]RE-RUN FAILED[/]" if c.error else
                  f"[red]DIFFERS: {', '.join(d.name for d in over)}[/]" if over else "[green]ok[/]")
        preds = {True: "identical", False: "differ", None: "–"}[c.predictions_identical]
        table.add_row(c.record.label(), _acc(by_name.get("out_of_domain.accuracy")),
                      _acc(by_name.get("in_domain.accuracy")),
                      f"{abs(worst.diff):.2g} ({worst.name})" if worst else "–", preds, status)
    console.print(table)
    if result.cis:
        cis = Table(title="leaderboard mean with the re-runs in place of their records vs the committed 95% CI")
        for col in ("method", "split", "metric", "committed mean [95% CI]", "the re-run runs: committed → re-run",
                    "mean with re-runs", "inside"):
            cis.add_column(col)
        for g in result.cis:
            ci = "no CI: 1 fold" if g.ci_low != g.ci_low else f"{g.ci_low:.3f}, {g.ci_high:.3f}"
            inside = {True: "[green]yes[/]", False: "[red]no[/]", None: "–"}[g.inside]
            cis.add_row(g.method, g.split, g.metric,
                        f"{g.committed_mean:.3f} [{ci}] ({g.n_committed} runs, {g.n_folds} folds)",
                        f"{g.these_committed:.3f} → {g.these_rerun:.3f} (n={g.n_reruns})", f"{g.rerun_mean:.3f}",
                        inside)
        console.print(cis)
    for c in result.runs:
        for note in c.notes:
            typer.echo(f"note: {c.record.label()}: {note}")
    identical = sum(bool(c.predictions_identical) for c in result.runs)
    passed = sum(c.passed(result.tolerance) for c in result.runs)
    typer.echo(f"{passed} of {len(result.runs)} runs within tolerance {result.tolerance:g} "
               f"({identical} with bit-identical predictions)")


def print_plan(records: list[Record]) -> None:
    """What would be re-run, its recorded cost and how this machine differs from each record's."""
    from ..records import environment_info  # reads torch's build: loaded only here

    here = environment_info()
    total = 0.0
    for r in records:
        seconds = float((r.data.get("timings") or {}).get("total_s") or 0.0)
        total += seconds
        diff = environment_differences(r.data.get("environment") or {}, here)
        typer.echo(f"{r.path}: {r.label()}, recorded fit {fit_seconds(r):.0f} s, run {seconds:.0f} s"
                   + (f"; differs here in {'; '.join(diff)}" if diff else "; same code, hardware and threads here"))
    typer.echo(f"{len(records)} record(s), {total:.0f} s of recorded run time (dry run: nothing was re-run)")


@handle_errors
def verify(
    records: Annotated[list[Path] | None, typer.Argument(help="Record files (fold<k>_seed<s>.json) to re-run.",
                                                         show_default=False)] = None,
    sample: Annotated[int | None, typer.Option("--sample", help="Re-run N records drawn at random from --results "
                                               "instead of naming them.")] = None,
    results: Annotated[Path | None, typer.Option("--results", help="Folder the records are sampled from and whose "
                                                 f"records give the CIs (default {DEFAULT_RESULTS}; with record "
                                                 "files: each one's own results folder).")] = None,
    seed_of_sample: Annotated[int, typer.Option("--seed-of-sample", help="Seed of the random draw of --sample.")] = 0,
    cheap: Annotated[bool, typer.Option("--cheap", help="With --sample: draw only from the cheaper half of the methods "
                                        "(by median recorded fit time).")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest |re-run − committed| of any headline "
                                             "metric that passes; the default expects a bit-identical re-run (same "
                                             "CPU, torch and threads); use 0.05 on other hardware.")]
    = DEFAULT_TOLERANCE,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset name or folder to re-run on (default: "
                                                "the one each record names); must have the record's "
                                                "fingerprint.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto (default: the record's device).")]
    = None,
    keep: Annotated[Path | None, typer.Option("--keep", help="Keep the re-runs' records in this folder (default: a "
                                              "temporary folder, removed afterwards).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be re-run and its recorded cost; "
                                          "run nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show each run's progress.")] = False,
) -> None:
    """Re-run records from what they store and compare every headline metric; exit 1 beyond --tolerance.

    Each re-run goes through the same protocol and sealed worker as `bench run`, into a separate folder:
    the committed records are never touched. Refused: a record whose data fingerprint differs from the
    dataset here, a failed or corrupt record, a missing file.
    """
    if records and sample is not None:
        raise BenchError("give record files or --sample N, not both")
    if not records and sample is None:
        raise BenchError("nothing to verify: give record files (fold<k>_seed<s>.json) or --sample N "
                         f"(drawn from --results, default {DEFAULT_RESULTS})")
    if cheap and sample is None:
        raise BenchError("--cheap chooses among the records of --sample N; add --sample N")
    if sample is not None:
        chosen = sample_records(results or DEFAULT_RESULTS, sample, seed_of_sample, cheap)
    else:
        chosen = [load_verifiable(p) for p in records or []]
    if dry_run:
        print_plan(chosen)
        return
    log = (lambda line: typer.echo(line, err=True))
    result = verify_records(chosen, tolerance=tolerance, dataset=dataset, device=device, results_dir=results,
                            keep=keep, log=log, verbose=verbose)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
    else:
        print_verification(result)
    if not result.passed:
        failures = result.failures()
        typer.echo(f"error: {len(failures)} of {len(result.runs)} runs did not reproduce within tolerance "
                   f"{tolerance:g}: " + "; ".join(failures), err=True)
        raise typer.Exit(1)


def attach(app: typer.Typer) -> None:
    app.command("verify")(verify)
