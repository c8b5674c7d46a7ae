"""``bench sweep``: methods × splits × folds × seeds as independent units, locally, in process or on SLURM."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import BenchError
from ..records import DEFAULT_RESULTS
from ..results_folder import check_output_folder
from ..sealed.limits import DEFAULT_TIME_LIMIT_S
from .common import handle_errors
from .run import parse_int_list
from .slurm_options import slurm_option_types, slurm_settings

if TYPE_CHECKING:  # the plan imports the protocol (torch); load it only when a command runs
    from ..sweep.plan import Plan

_SLURM = slurm_option_types("unit", folder_default="<logs>/slurm")


def parse_names(text: str | None, default: tuple[str, ...]) -> list[str]:
    """``"erm, adabn"`` -> ``["erm", "adabn"]``; None -> ``default``."""
    if text is None:
        return list(default)
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """``["scenarios=label_shift"]`` -> ``{"scenarios": "label_shift"}`` (values stay strings)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"{option} expects key=value, got '{pair}' (e.g. {option} scenarios=label_shift)")
        out[key.strip()] = value.strip()
    return out


def default_jobs() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _print_plan(plan: Plan) -> None:
    """The units to run, in order, with what each waits for, its expected time and its record."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench sweep plan: {len(plan.todo)} to run, {len(plan.finished)} already recorded")
    for col in ("order", "unit", "runs after", "expected (s)", "record"):
        table.add_column(col)
    for i, unit in enumerate(plan.todo, 1):
        before = plan.waits.get(unit)
        expected = plan.estimates.get(unit)
        table.add_row(str(i), unit.label, before.label if before else "", "–" if expected is None else f"{expected:.0f}",
                      unit.record)
    Console(width=200).print(table)


@handle_errors
def sweep(
    methods: Annotated[str | None, typer.Option(help="Comma-separated methods (default: the default leaderboard's, "
                                                "benchmark.sweep.grid.DEFAULT_METHODS).")] = None,
    splits: Annotated[str | None, typer.Option(help="Comma-separated splits (default: batch_out,source_out).")]
    = None,
    folds: Annotated[str | None, typer.Option(help="Comma-separated fold indices (default: every fold of each "
                                              "split).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated training seeds (default 0,1,2; 0 with "
                                              "--quick).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name (synthetic, jump) or path to a dataset folder.")]
    = "synthetic",
    results: Annotated[Path, typer.Option("--results", help="Folder the run records go to.")] = DEFAULT_RESULTS,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke profile: the methods' quick settings; records "
                                        "marked quick and left out of the leaderboard.")] = False,
    preset: Annotated[str | None, typer.Option("--preset", help="Named setting applied before --quick and --set "
                                               "(e.g. paper).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value for every "
                                                   "method (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto (GPU if visible), cpu or cuda.")] = "auto",
    time_limit: Annotated[float, typer.Option("--time-limit", help="Wall-clock limit of each run in seconds.")]
    = DEFAULT_TIME_LIMIT_S,
    memory_limit: Annotated[float | None, typer.Option("--memory-limit", help="Data memory limit of each run's "
                                                       "worker in GB (default: none).")] = None,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the fold assignment.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Recompute units that already have a record.")] = False,
    scenarios: Annotated[str | None, typer.Option("--scenarios", help="Comma-separated scenarios scored on each fitted run "
                                           "(label_shift, controls, support, severity), 'all' (every one that "
                                           "applies to the dataset, as bench run) or 'none'; a record that lacks "
                                           "one is re-run to add it. Default: all; none with --quick.")] = None,
    run_option: Annotated[list[str] | None, typer.Option("--run-option", help="A further keyword of the "
                                                         "protocol for every unit, key=value (repeatable; the "
                                                         "value is passed as a string).")] = None,
    executor: Annotated[str, typer.Option("--executor", "-x", help="local (worker processes on this machine), "
                                          "debug (in this process, one after the other) or slurm (submitit job "
                                          "arrays).")] = "local",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Units at once with --executor local (default: "
                                             "the CPU cores).")] = None,
    process_per_unit: Annotated[bool, typer.Option("--process-per-unit", help="With --executor local, a new "
                                                   "worker process for every unit (default: each worker takes one "
                                                   "unit after another).")] = False,
    logs: Annotated[Path | None, typer.Option("--logs", help="Folder of the units' logs (default: 'logs' next to "
                                              "the results folder, e.g. leaderboard/logs).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the units to run, in order, and exit.")] = False,
    slurm_config: _SLURM.config = None,
    partition: _SLURM.partition = None,
    slurm_time: _SLURM.time = None,
    gpus: _SLURM.gpus = None,
    cpus: _SLURM.cpus = None,
    mem_gb: _SLURM.mem_gb = None,
    array_parallelism: _SLURM.array_parallelism = None,
    max_retries: _SLURM.max_retries = None,
    slurm_folder: _SLURM.folder = None,
    wait: _SLURM.wait = True,
) -> None:
    """Run every METHOD × SPLIT × FOLD × SEED as its own unit (one sealed run and record each; resumable).

    Units with an ok record of the same config and data are skipped; ERM of a fold and seed runs before the
    methods that load its cached model. Exit code 1 when any unit failed.
    """
    from ..protocol.loop import parse_overrides
    from ..sweep.grid import DEFAULT_METHODS, DEFAULT_SPLITS, RunSettings
    from ..sweep.plan import make_plan
    from ..sweep.dispatch import check_executor, run_sweep
    from ..scenarios import scenarios_option

    slurm = slurm_settings(executor, slurm_config, wait, partition=partition, time_min=slurm_time,
                           gpus_per_node=gpus, cpus_per_task=cpus, mem_gb=mem_gb,
                           array_parallelism=array_parallelism, max_retries=max_retries, folder=slurm_folder)
    n_jobs = jobs if jobs is not None else default_jobs()
    check_executor(executor, n_jobs)
    check_output_folder(results)  # before any unit starts: a file in the way would fail every record
    check_output_folder(logs if logs is not None else Path(results).parent / "logs", "--logs")
    seed_list = parse_int_list(seeds, "--seeds") if seeds is not None else ([0] if quick else [0, 1, 2])
    fold_list = parse_int_list(folds, "--folds") if folds is not None else None
    settings = RunSettings.build(results_dir=results, dataset=dataset, split_seed=split_seed, device=device,
                                 quick=quick, force=force, preset=preset, overrides=parse_overrides(set_ or []),
                                 time_limit_s=time_limit, memory_limit_gb=memory_limit, scenarios=scenarios_option(scenarios, quick),
                                 run_options=parse_pairs(run_option, "--run-option"))
    planning = time.perf_counter()
    typer.echo(f"bench sweep: planning (opening dataset {dataset}, checking the records in {results})")
    plan = make_plan(parse_names(methods, DEFAULT_METHODS), parse_names(splits, DEFAULT_SPLITS), fold_list,
                     seed_list, settings)
    planned_s = time.perf_counter() - planning
    if dry_run:
        from ..sweep.clock import expected

        _print_plan(plan)
        typer.echo(expected(plan, 1 if executor == "debug" else n_jobs).line())
        return
    log_dir = logs if logs is not None else Path(results).parent / "logs"
    where = {"local": f"{n_jobs} worker process(es), logs in {log_dir}", "debug": "in this process",
             "slurm": "SLURM job arrays"}[executor]
    typer.echo(f"bench sweep: {plan.total} units, {len(plan.finished)} already recorded, {len(plan.todo)} to run "
               f"({where}); records in {results} (planned in {planned_s:.1f} s)")
    progress = run_sweep(plan, executor, jobs=n_jobs, logs=log_dir, slurm=slurm, wait=wait, fresh=process_per_unit)
    if executor == "slurm" and not wait:
        typer.echo(f"{len(plan.todo)} unit(s) queued or running on SLURM; follow them with squeue or sacct, or rerun "
                   "this command without --no-wait to follow them here (finished units are then skipped)")
        return
    progress.summary()
    failed = [r for r in progress.results if r.status == "failed"]
    if failed:
        first = failed[0]
        where_log = f"; log: {first.log}" if first.log else ""
        typer.echo(f"error: {len(failed)} of {plan.total} units failed (first: {first.unit.label}: {first.error}"
                   f"{where_log}); their records and logs say why, rerun the same command to retry", err=True)
        raise typer.Exit(1)


def attach(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
