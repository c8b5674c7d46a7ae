"""`bench data prepare jump`: download and preprocess JUMP-CP into a platebench dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import BenchError
from .common import handle_errors
from .sweep import SLURM_PANEL, default_jobs

if TYPE_CHECKING:  # the executors import the sweep; load them only when a command runs
    from ..datasets.jump import PrepareOptions
    from ..datasets.jump.executors import ExecutorOptions

prepare_app = typer.Typer(help="Prepare real datasets from their public sources.", no_args_is_help=True)


def _confirm(yes: bool):
    def confirm(estimate) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise BenchError(f"this run would {estimate.describe(remote=True)}; there is no terminal to ask for "
                             "confirmation: pass --yes to go ahead")
        return typer.confirm("go ahead?", default=False)

    return confirm


def _runner(executor: str | None, jobs: int | None, slurm_file: Path | None, slurm_options: dict[str, Any],
            wait: bool) -> ExecutorOptions | None:
    """The executor the plates run on (None: this process), from the options of ``bench sweep``'s kind."""
    given = [k for k, v in slurm_options.items() if v is not None] + (["slurm_config"] if slurm_file else [])
    if executor != "slurm" and (given or not wait):
        raise BenchError(f"the SLURM options ({', '.join(given) or 'no_wait'}) apply to --executor slurm only; "
                         "drop them or add --executor slurm")
    if executor is None:
        if jobs is not None:
            raise BenchError("--jobs applies to --executor local; add --executor local (or drop --jobs)")
        return None
    from ..datasets.jump.executors import ExecutorOptions
    from ..sweep.slurm_config import slurm_config

    slurm = slurm_config(slurm_file, **slurm_options) if executor == "slurm" else None
    return ExecutorOptions(executor, jobs if jobs is not None else default_jobs(), slurm, wait)


def _print_plan(options: PrepareOptions, as_json: bool) -> None:
    from rich.console import Console

    from ..datasets.jump import plan_jump

    plan = plan_jump(options, console=Console(stderr=True))
    if as_json:
        typer.echo(json.dumps(plan.to_json(), indent=1))
    else:
        for line in plan.lines():
            typer.echo(line)


@prepare_app.command("jump")
@handle_errors
def jump(
    root: Annotated[str, typer.Option(
        help="Where to read the Cell Painting Gallery: the public bucket (anonymous S3) or a local folder "
             "with the same layout (<root>/cpg0016-jump/<source>/...).")] = "s3://cellpainting-gallery",
    sources: Annotated[str, typer.Option(help="Comma-separated JUMP sources.")] = "source_3,source_8",
    reference_batch_filter: Annotated[bool, typer.Option(
        "--reference-batch-filter/--no-reference-batch-filter",
        help="Drop the source_3 batches CP_33_all_Phenix1, CP_34_mix_Phenix1, CP_35_all_Phenix1, "
             "CP_36_all_Phenix1, as the reference study does.")] = True,
    min_sites: Annotated[int, typer.Option(
        help="Drop every (compound, well position) with this many sites or fewer over its source "
             "(the reference filter; removes deviating plate layouts).")] = 36,
    out: Annotated[Path | None, typer.Option(
        help="Output dataset folder [default: $PLATEBENCH_CACHE/jump, where `--dataset jump` looks].")] = None,
    workers: Annotated[int, typer.Option(help="Concurrent image requests (bounded thread pool), per plate "
                                              "being prepared.")] = 16,
    max_plates: Annotated[int | None, typer.Option(
        help="Prepare only this many plates (round robin over sources and batches) for a small first try; "
             "rerun without it to add the rest.")] = None,
    metadata: Annotated[Path | None, typer.Option(
        help="Folder with local copies of plate.csv.gz, well.csv.gz (and microscope_config.csv) from the "
             "GitHub repository jump-cellpainting/datasets (metadata/). Without it they are downloaded over "
             "HTTPS from raw.githubusercontent.com into <out>/metadata/.")] = None,
    crop: Annotated[int, typer.Option(
        help="Side of the centre crop stored per site after the x1/2 downsampling (one shape for all "
             "sources: source_3 gives 540 px, source_8 512 px).")] = 512,
    retries: Annotated[int, typer.Option(help="Attempts per image before a site is skipped (downloads).")] = 3,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before a large download.")] = False,
    plan_only: Annotated[bool, typer.Option(
        "--plan-only", help="Print per source the plates, batches, sites and expected bytes (from the metadata "
                            "and the load-data tables), then exit: no image is fetched, nothing is written to "
                            "--out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --plan-only: print the plan as JSON.")] = False,
    executor: Annotated[str | None, typer.Option(
        "--executor", "-x", help="Prepare the plates as units, one per plate: local (--jobs worker processes), "
                                 "debug (in this process, one after the other) or slurm (one SLURM array task "
                                 "per plate). Default: in this process, one plate after another, with a progress "
                                 "bar.")] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", help="Plates at once with --executor local (default: the CPU cores); each reads its "
                             "images with --workers threads.")] = None,
    slurm_config: Annotated[Path | None, typer.Option(
        "--slurm-config", help="TOML file of SLURM settings, as for bench sweep (docs/cluster.md); the options "
                               "below override it.", rich_help_panel=SLURM_PANEL)] = None,
    partition: Annotated[str | None, typer.Option(help="SLURM partition.", rich_help_panel=SLURM_PANEL)] = None,
    slurm_time: Annotated[int | None, typer.Option(
        "--slurm-time", help="Minutes per plate (default 1440).", rich_help_panel=SLURM_PANEL)] = None,
    cpus: Annotated[int | None, typer.Option(
        "--cpus", help="CPU cores per plate (default 2).", rich_help_panel=SLURM_PANEL)] = None,
    mem_gb: Annotated[float | None, typer.Option(
        "--mem-gb", help="Memory per plate in GB (4 is ample: a plate's prepared images, ~0.8 GB, are held "
                         "twice while stacked, plus the images in flight).", rich_help_panel=SLURM_PANEL)] = None,
    array_parallelism: Annotated[int | None, typer.Option(
        "--array-parallelism", help="Plates of the array running at once (default 32).",
        rich_help_panel=SLURM_PANEL)] = None,
    max_retries: Annotated[int | None, typer.Option(
        "--max-retries", help="Requeues of a preempted or timed-out plate before it is reported failed "
                              "(default 3).", rich_help_panel=SLURM_PANEL)] = None,
    slurm_folder: Annotated[Path | None, typer.Option(
        "--slurm-folder", help="submitit's folder (scripts, logs, jobs.json; default <out>/slurm).",
        rich_help_panel=SLURM_PANEL)] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Follow the SLURM jobs until every plate ended (then write the index), or "
                                 "submit and return.", rich_help_panel=SLURM_PANEL)] = True,
) -> None:
    """Download and preprocess JUMP-CP (cpg0016) poscon + DMSO sites into a dataset; resumable.

    Finished plates are kept: rerun the same command after an interruption to resume. Exit code 1 when a
    plate failed (it is named; a rerun retries it); the index is written once every planned plate is done.
    """
    from ..datasets.jump import PrepareOptions, prepare_jump

    source_list = tuple(s.strip() for s in sources.split(",") if s.strip())
    if not source_list:
        raise BenchError("--sources is empty; pass e.g. --sources source_3,source_8")
    if retries < 1:
        raise BenchError(f"--retries must be >= 1, got {retries}")
    if as_json and not plan_only:
        raise BenchError("--json applies to --plan-only; add --plan-only (or drop --json)")
    slurm_options = {"partition": partition, "time_min": slurm_time, "cpus_per_task": cpus, "mem_gb": mem_gb,
                     "array_parallelism": array_parallelism, "max_retries": max_retries,
                     "folder": str(slurm_folder) if slurm_folder is not None else None}
    runner = _runner(executor, jobs, slurm_config, slurm_options, wait)
    options = PrepareOptions(root=root, sources=source_list, drop_reference_batches=reference_batch_filter,
                             min_sites=min_sites, out=out, workers=workers, max_plates=max_plates,
                             metadata=metadata, crop=crop, attempts=retries)
    if plan_only:
        _print_plan(options, as_json)
        return
    report = prepare_jump(options, confirm=_confirm(yes), runner=runner)
    if report.pending:
        typer.echo(f"{len(report.pending)} plate(s) queued or running on SLURM; follow them with squeue or sacct, "
                   "or rerun this command without --no-wait to follow them here and write the index when every "
                   "plate is done")
    elif report.meta is not None:
        typer.echo(f"open it with `bench data info {report.out}` or `--dataset {report.out}`")


def attach_prepare(data_app: typer.Typer) -> None:
    """Add the ``prepare`` sub-app (``bench data prepare jump``) to the ``bench data`` sub-app."""
    data_app.add_typer(prepare_app, name="prepare")
