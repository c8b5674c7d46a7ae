"""`bench data prepare jump`: download and preprocess JUMP-CP into a platebench dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import BenchError
from .common import handle_errors
from .slurm_options import slurm_option_types, slurm_settings
from .sweep import default_jobs

if TYPE_CHECKING:  # the executors import the sweep; load them only when a command runs
    from ..datasets.jump import PrepareOptions
    from ..datasets.jump.executors import ExecutorOptions
    from ..slurm.config import SlurmConfig

_SLURM = slurm_option_types("plate", folder_default="<out>/slurm", mem_help=(
    "Memory per plate in GB (4 is ample: a plate's prepared images, ~0.8 GB, are held twice while stacked, plus "
    "the images in flight)."))

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


def _runner(executor: str | None, jobs: int | None, slurm: SlurmConfig | None, wait: bool) -> ExecutorOptions | None:
    """The executor the plates run on (None: this process), from the options of ``bench sweep``'s kind."""
    if executor is None:
        if jobs is not None:
            raise BenchError("--jobs applies to --executor local; add --executor local (or drop --jobs)")
        return None
    from ..datasets.jump.executors import ExecutorOptions

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
    slurm_config: _SLURM.config = None,
    partition: _SLURM.partition = None,
    slurm_time: _SLURM.time = None,
    cpus: _SLURM.cpus = None,
    mem_gb: _SLURM.mem_gb = None,
    array_parallelism: _SLURM.array_parallelism = None,
    max_retries: _SLURM.max_retries = None,
    slurm_folder: _SLURM.folder = None,
    wait: _SLURM.wait = True,
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
    slurm = slurm_settings(executor, slurm_config, wait, partition=partition, time_min=slurm_time, cpus_per_task=cpus,
                           mem_gb=mem_gb, array_parallelism=array_parallelism, max_retries=max_retries,
                           folder=slurm_folder)
    runner = _runner(executor, jobs, slurm, wait)
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
