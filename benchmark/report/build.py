"""``bench report``: figures of one method and split drawn from its run records.

From the predictions of every record of a method and split (or of one record):

- a **confusion matrix** of the target (out-of-domain) images: rows are the true classes,
  normalised per row; each cell shows the share of its row;
- a **heatmap of accuracy per target plate**: one row per (plate, fold), grouped by source
  (lab) and then batch, one column per seed and their mean, so a failing lab or plate stands out.

For a profile method, :mod:`benchmark.report.embeddings` adds the embeddings of a subsample of
images before and after correction (:func:`benchmark.report.figures.embedding_figure`). This module
finds and checks the records (file I/O) and writes the figures; the tables
(:mod:`benchmark.report.tables`) and the figures (:mod:`benchmark.report.figures`) are pure
functions (polars frames and arrays in, a table or a figure out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import BenchError, DataError, UnknownNameError
from ..records import DEFAULT_RESULTS, QUICK, Record, load_ok_record, load_records, read_predictions

DEFAULT_OUT = Path("leaderboard") / "figures" / "report"
"""Where ``bench report`` writes its figures by default (one folder per method and split, or per record)."""


# ----------------------------------------------------------------------------- finding records

@dataclass
class Runs:
    """The records a report is drawn from, and notes on what was left out."""

    records: list[Record]
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.records[0].method

    @property
    def split(self) -> str:
        return self.records[0].split

    @property
    def quick(self) -> bool:
        return self.records[0].profile == QUICK


def _run_command(method: str, split: str, dataset: str, results: Path) -> str:
    extra = "" if Path(results) == DEFAULT_RESULTS else f" --results {results}"
    return f"bench run -m {method} -s {split} --dataset {dataset}{extra}"


def _record_folders(results: Path, dataset: str, method: str, split: str) -> list[Path]:
    """The folders that may hold the records: of the dataset's current version if it is a folder, else of every
    version of the named dataset (``<results>/<dataset>-*/<method>/<split>``)."""
    if Path(dataset).is_dir():
        from ..datasets import load_dataset

        opened = load_dataset(dataset)
        return [Path(results) / f"{opened.name}-{opened.fingerprint}" / method / split]
    return sorted(p for p in Path(results).glob(f"{dataset}-*/{method}/{split}") if p.is_dir())


def _one_version(folders: list[Path], dataset: str) -> Path:
    """The folder of the dataset's current version when records of several versions exist."""
    from ..datasets import load_dataset

    current = load_dataset(dataset)
    for folder in folders:
        if folder.parent.parent.name == f"{current.name}-{current.fingerprint}":
            return folder
    raise DataError(f"records of several versions of dataset '{dataset}' exist ({', '.join(map(str, folders))}) "
                    f"and none is of its current version {current.fingerprint}; give one record with --record")


def find_runs(results: Path, dataset: str, method: str, split: str) -> Runs:
    """The ok records of ``method`` on ``split`` (full ones, else ``--quick`` ones) under ``results``.

    Raises :class:`BenchError` naming the folder searched and the ``bench run`` command that makes
    the records when there are none, and naming the file when a record is damaged.
    """
    from ..splits import SPLITS

    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    folders = _record_folders(results, dataset, method, split)
    if len(folders) > 1:
        folders = [_one_version(folders, dataset)]
    found = load_records(folders[0]) if folders and folders[0].is_dir() else None
    if found is None or not (found.ok or found.quick or found.failed or found.invalid or found.outdated):
        from ..registry import method_entry

        method_entry(method)  # an unknown name: the error lists the methods (plugins from metadata, not imported)
        searched = folders[0] if folders else Path(results) / f"{dataset}-<fingerprint>" / method / split
        raise DataError(f"no run records of method '{method}' on split '{split}' in {searched}; make them with "
                        f"`{_run_command(method, split, dataset, results)}` (or give --results / --dataset)")
    if found.invalid:
        path, why = found.invalid[0]
        raise DataError(f"record {path} is damaged ({why}); restore it from git or recompute it with "
                        f"`{_run_command(method, split, dataset, results)}`")
    records = found.ok or found.quick
    notes = [f"{r.label()} failed ({r.data.get('error')}); not shown" for r in found.failed]
    notes += [f"{path} has an older record format ({fmt}); not shown" for path, fmt in found.outdated]
    if not records:
        raise DataError(f"every record of method '{method}' on split '{split}' in {folders[0]} failed or is "
                        f"outdated; recompute them with `{_run_command(method, split, dataset, results)}`")
    if not found.ok:
        notes.append(f"only --quick smoke records exist in {folders[0]}; the figures show those")
    return Runs(sorted(records, key=lambda r: (r.fold, r.seed)), notes)


def load_run(path: Path) -> Runs:
    """The one ok record at ``path``; :class:`DataError` saying what is wrong with it otherwise."""
    return Runs([load_ok_record(path, "draw", lambda data: data["class_names"])])


def predictions_of(records: Sequence[Record]) -> pl.DataFrame:
    """The predictions of every record, one table, with the record's ``fold`` and ``seed`` as columns."""
    frames = []
    for r in records:
        try:
            frame = read_predictions(r)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(f"cannot read the predictions of record {r.path}: {exc}") from None
        frames.append(frame.with_columns(pl.lit(r.fold, pl.Int64).alias("fold"),
                                         pl.lit(r.seed, pl.Int64).alias("seed")))
    return pl.concat(frames, how="vertical_relaxed")


# ----------------------------------------------------------------------------- the report

def run_title(runs: Runs) -> str:
    """``method split: N runs (folds …, seeds …)`` for the figure titles."""
    folds = sorted({r.fold for r in runs.records})
    seeds = sorted({r.seed for r in runs.records})
    quick = ", --quick smoke runs" if runs.quick else ""
    return (f"{runs.method} · {runs.split} · {len(runs.records)} run(s): folds {', '.join(map(str, folds))}, "
            f"seeds {', '.join(map(str, seeds))}{quick}")


def prediction_figures(runs: Runs, out: Path) -> list[Path]:
    """Write the confusion matrix and the plate heatmap of ``runs`` into ``out``; return their paths."""
    from ..leaderboard.figure import save_figure
    from .figures import DPI, confusion_figure, plate_figure
    from .tables import confusion_counts, plate_accuracy, plate_grid, target_rows

    predictions = target_rows(predictions_of(runs.records))
    if predictions.is_empty():
        raise DataError(f"the records of {runs.method} on {runs.split} hold no target (out-of-domain) predictions "
                        f"(first: {runs.records[0].path}); nothing to draw")
    names = list(runs.records[0].data["class_names"])
    counts = confusion_counts(predictions["label"].to_numpy(), predictions["predicted"].to_numpy(), len(names))
    accuracy = np.trace(counts) / counts.sum()
    title = run_title(runs)
    confusion = confusion_figure(counts, names, f"{title}\ntarget plates: {counts.sum()} image predictions, "
                                                f"accuracy {accuracy:.3f}; rows normalised")
    grid = plate_grid(plate_accuracy(predictions))
    plates = plate_figure(grid, f"{title}\naccuracy per target plate (grouped by source, then batch)")
    return [save_figure(confusion, Path(out) / "confusion.png", DPI),
            save_figure(plates, Path(out) / "plate_accuracy.png", DPI)]


def default_out(runs: Runs, single: bool) -> Path:
    """``leaderboard/figures/report/<method>_<split>`` (``…_fold<k>_seed<s>`` for one record; ``_quick`` for
    smoke records)."""
    name = f"{runs.method}_{runs.split}"
    if single:
        name += f"_fold{runs.records[0].fold}_seed{runs.records[0].seed}"
    return DEFAULT_OUT / (name + ("_quick" if runs.quick else ""))


def pick_record(runs: Runs, fold: int | None, seed: int | None) -> Record:
    """The record of ``fold`` and ``seed`` (default fold 0 seed 0, else the first one) for the embedding figure."""
    if fold is None and seed is None:
        wanted = [r for r in runs.records if (r.fold, r.seed) == (0, 0)]
        return wanted[0] if wanted else runs.records[0]
    chosen = [r for r in runs.records if (fold is None or r.fold == fold) and (seed is None or r.seed == seed)]
    if not chosen:
        have = ", ".join(f"fold {r.fold} seed {r.seed}" for r in runs.records)
        wanted = " ".join(f"{what} {v}" for what, v in (("fold", fold), ("seed", seed)) if v is not None)
        raise BenchError(f"no record of {runs.method} on {runs.split} for {wanted}; the records are: {have}; "
                         "choose one of them with --fold and --seed")
    return chosen[0]
