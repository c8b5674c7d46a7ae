"""``bench run``: run one method on one split (every fold and seed), one record per run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config_bounds import naming_method
from ..errors import BenchError
from ..records import DEFAULT_RESULTS
from ..results_folder import check_output_folder
from ..sealed.limits import DEFAULT_TIME_LIMIT_S
from .common import handle_errors

if TYPE_CHECKING:  # the protocol imports torch; load it only when a command runs
    from ..protocol.loop import RunOutcome


def parse_int_list(text: str, option: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything else is an error naming the option."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"{option} expects comma-separated integers (e.g. {option} 0,1,2), got '{text}'") from None
    if not values:
        raise BenchError(f"{option} is empty; give comma-separated integers, e.g. {option} 0,1,2")
    return values


def print_summary(outcomes: list[RunOutcome]) -> None:
    """A table of the runs: done, skipped or failed, with accuracies and time."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bench run summary")
    for col in ("method", "split", "fold", "seed", "status", "out-of-domain acc.", "in-domain acc.", "time (s)",
                "note"):
        table.add_column(col)
    for o in outcomes:
        acc = (lambda v: "–" if v is None else f"{v:.3f}")
        note = o.error or str(o.path)
        status = {"ok": "[green]ok[/]", "skipped": "skipped", "failed": "[red]FAILED[/]"}[o.status]
        table.add_row(o.method, o.split, str(o.fold), str(o.seed), status, acc(o.out_of_domain_accuracy),
                      acc(o.in_domain_accuracy), f"{o.seconds:.1f}", note)
    Console(width=200).print(table)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    typer.echo(f"{counts['ok']} done, {counts['skipped']} skipped (already recorded), {counts['failed']} failed")


@handle_errors
def run(
    method: Annotated[str, typer.Option("--method", "-m", help="Registered method name (see `bench methods list`).")],
    split: Annotated[str, typer.Option("--split", "-s", help="source_out (leave one lab out) or batch_out.")],
    dataset: Annotated[str, typer.Option(help="Dataset name (synthetic, jump) or path to a dataset folder.")]
    = "synthetic",
    seeds: Annotated[str | None, typer.Option(help="Comma-separated training seeds (default 0,1,2; 0 with --quick).")]
    = None,
    folds: Annotated[str | None, typer.Option(help="Comma-separated fold indices to run (default: all).")] = None,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the fold assignment.")] = 0,
    device: Annotated[str, typer.Option(help="auto (GPU if visible), cpu or cuda.")] = "auto",
    results: Annotated[Path, typer.Option("--results", help="Folder the run records go to.")] = DEFAULT_RESULTS,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke profile: seed 0, the method's quick settings; "
                                        "records marked quick and left out of the leaderboard.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute runs that already have a record.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value "
                                                   "(repeatable), e.g. --set epochs=5.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the summary.")] = False,
    preset: Annotated[str | None, typer.Option("--preset", help="Named setting applied before --quick and --set: "
                                               "'paper' = the reference study's (ResNet-50, 256 px, GPU with "
                                               "bf16 mixed precision when present).")] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help="Print the resolved config and device, "
                                              "then exit without running.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Wall-clock limit of each run in seconds; a run "
                                              "past it fails alone and the others go on.")] = DEFAULT_TIME_LIMIT_S,
    memory_limit: Annotated[float | None, typer.Option("--memory-limit", help="Data memory limit of each run's "
                                                       "worker in GB (default: none); past it the method gets a "
                                                       "MemoryError and its run fails.")] = None,
    scenarios: Annotated[str | None, typer.Option("--scenarios", help="Comma-separated scenarios scored on each fitted run "
                                           "(label_shift, controls, support, severity), 'all' (every one that "
                                           "applies to the dataset) or 'none'; an existing record that lacks one "
                                           "is re-run to add it. Default: all; none with --quick.")] = None,
) -> None:
    """Run METHOD on every fold and seed of SPLIT; write one record per run (resumable).

    Each run's method executes in a sealed worker process that sees only the fold's training and
    validation labels (docs/sealed.md).
    """
    from ..protocol.presets import get_preset
    from ..protocol.loop import DEFAULT_SEEDS, parse_overrides, resolve_device, run_protocol
    from ..scenarios import scenarios_option

    if preset is not None:
        get_preset(preset)  # unknown names list the valid ones
    if show_config:
        import json

        from ..method_info import method_info

        with naming_method(method):
            info = method_info(method, parse_overrides(set_ or []), quick, preset)  # a plugin: described in a sandbox
        typer.echo(json.dumps({"method": method, "preset": preset, "device": resolve_device(device),
                               "config": info.config}, indent=1))
        return

    from ..sealed.runs import warm_up

    check_output_folder(results)  # before anything starts: a file in the way would fail the first record
    warm_up()  # the sealed workers' zygote imports torch while this process does the same
    seed_list = parse_int_list(seeds, "--seeds") if seeds is not None else ([0] if quick else list(DEFAULT_SEEDS))
    fold_list = parse_int_list(folds, "--folds") if folds is not None else None
    outcomes = run_protocol(method, split, dataset, seeds=seed_list, folds=fold_list, split_seed=split_seed,
                            device=device, results_dir=results, quick=quick, force=force,
                            overrides=parse_overrides(set_ or []), verbose=not quiet,
                            log=None if quiet else typer.echo, preset=preset, time_limit_s=time_limit,
                            memory_limit_gb=memory_limit, scenarios=scenarios_option(scenarios, quick))
    print_summary(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        typer.echo(f"error: {len(failed)} of {len(outcomes)} runs failed (first: fold {failed[0].fold} seed "
                   f"{failed[0].seed}: {failed[0].error}); their records say why, rerun the same command to retry",
                   err=True)
        raise typer.Exit(1)


def attach(app: typer.Typer) -> None:
    app.command("run")(run)
