"""``bench report``: figures of one method and split (or one record): confusion matrix, accuracy per target
plate and, for a profile method, its embeddings before and after correction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import BenchError
from ..records import DEFAULT_RESULTS
from .common import handle_errors

if TYPE_CHECKING:
    from ..records import Record

@handle_errors
def report(
    method: Annotated[str | None, typer.Option("--method", "-m", help="Method whose records to draw.")] = None,
    split: Annotated[str | None, typer.Option("--split", "-s", help="source_out or batch_out.")] = None,
    record: Annotated[Path | None, typer.Option("--record", help="Draw one record (fold<k>_seed<s>.json) instead "
                                                "of every record of --method and --split.")] = None,
    results: Annotated[Path, typer.Option("--results", help="Folder of run records.")] = DEFAULT_RESULTS,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset name or folder the records were run on "
                                                "(default synthetic; with --record: the record's own).")] = None,
    fold: Annotated[int | None, typer.Option("--fold", help="Fold of the run whose embeddings are drawn "
                                             "(default 0).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the run whose embeddings are drawn "
                                             "(default 0).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the PNGs (default leaderboard/figures/report/"
                                             "<method>_<split>[_fold<k>_seed<s>]).")] = None,
    embeddings: Annotated[bool, typer.Option("--embeddings/--no-embeddings", help="Draw a profile method's "
                                             "embeddings before and after correction (re-fits one run).")] = True,
    max_images: Annotated[int, typer.Option("--max-images", help="Images shown in the embedding figure.")] = 1500,
    device: Annotated[str, typer.Option("--device", help="Device of the embedding re-fit: cpu or cuda.")] = "cpu",
) -> None:
    """Draw a confusion matrix and a heatmap of accuracy per target plate from the predictions of every record
    of --method and --split (or of one --record) and, for a built-in profile method, its embeddings before and
    after correction (PCA, by lab and by class) from one run re-fitted in this process.

    The re-fit runs unsealed, so it is done only for the built-in profile methods (profile_*); a plugin's
    profile method is refused (use --no-embeddings). --fold and --seed choose that run only; the other figures
    use every record.
    """
    from ..report.build import default_out, find_runs, load_run, pick_record, prediction_figures

    if record is not None and (method or split):
        raise BenchError("give --record PATH or --method and --split, not both")
    if record is None and not (method and split):
        raise BenchError("say what to draw: --method M --split S (every record of them under --results), "
                         "or --record PATH/fold<k>_seed<s>.json")
    if record is not None and (fold is not None or seed is not None):
        raise BenchError("--fold and --seed choose among the records of --method and --split; a --record is "
                         "one fold and seed already")
    if max_images < 10:
        raise BenchError(f"--max-images must be at least 10, got {max_images}")
    runs = load_run(record) if record is not None else find_runs(results, dataset or "synthetic", method, split)
    folder = out or default_out(runs, single=record is not None)
    chosen = pick_record(runs, fold, seed)
    for note in runs.notes:
        typer.echo(f"note: {note}")
    for path in prediction_figures(runs, folder):
        typer.echo(f"wrote {path}")
    if embeddings:
        _embeddings(chosen, folder, dataset, max_images, device)


def _embeddings(chosen: Record, folder: Path, dataset: str | None, max_images: int, device: str) -> None:
    """The embedding figure of ``chosen``, or a note saying why it is skipped."""
    from ..records import read_predictions
    from ..report.embeddings import embeddable, embedding_figure_of

    cls, why = embeddable(chosen.method)
    if cls is None:
        typer.echo(f"note: {why}")
        return
    typer.echo(f"re-fitting {chosen.label()} in this process for its embeddings ...")
    path, emb = embedding_figure_of(chosen, read_predictions(chosen), folder, dataset=dataset,
                                    max_images=max_images, device=device)
    typer.echo(f"wrote {path} ({len(emb.meta)} images; the re-fit predicts {emb.agreement:.1%} of the target "
               "plates' treated images as the record did)")


def attach(app: typer.Typer) -> None:
    app.command("report")(report)
