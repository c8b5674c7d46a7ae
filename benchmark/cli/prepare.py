"""`bench data prepare jump`: download and preprocess JUMP-CP into a platebench dataset."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import BenchError
from .common import handle_errors

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
    workers: Annotated[int, typer.Option(help="Concurrent image requests (bounded thread pool).")] = 16,
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
) -> None:
    """Download and preprocess JUMP-CP (cpg0016) poscon + DMSO sites into a dataset; resumable.

    Finished plates are kept: rerun the same command after an interruption to resume.
    """
    from ..datasets.jump import PrepareOptions, prepare_jump

    source_list = tuple(s.strip() for s in sources.split(",") if s.strip())
    if not source_list:
        raise BenchError("--sources is empty; pass e.g. --sources source_3,source_8")
    if retries < 1:
        raise BenchError(f"--retries must be >= 1, got {retries}")
    options = PrepareOptions(root=root, sources=source_list, drop_reference_batches=reference_batch_filter,
                             min_sites=min_sites, out=out, workers=workers, max_plates=max_plates,
                             metadata=metadata, crop=crop, attempts=retries)
    report = prepare_jump(options, confirm=_confirm(yes))
    if report.meta is not None:
        typer.echo(f"open it with `bench data info {report.out}` or `--dataset {report.out}`")


def attach_prepare(data_app: typer.Typer) -> None:
    """Add the ``prepare`` sub-app (``bench data prepare jump``) to the ``bench data`` sub-app."""
    data_app.add_typer(prepare_app, name="prepare")
