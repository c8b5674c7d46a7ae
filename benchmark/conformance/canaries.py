"""Canaries for ``bench methods check``: false labels planted where a cheating method might look for true ones.

Before the ``sealed`` check runs a method end to end, :func:`plant` writes, in each place a method might search
for labels (the current folder's ``leaderboard/results``, the default results folder, the platebench cache, the
home folder, the temporary folder), a copy of the check dataset (index and shards) and a run record with its
``*.predictions.parquet`` — with **false labels** for the check fold's target plates: at place ``k`` every target image's label is shifted
by ``k`` classes. A sealed worker cannot reach any of them. :func:`followed` then compares the method's
predictions with each place's labels: predictions that agree with one place's false labels far more than with
the true ones name that place. The canaries are removed afterwards (:func:`remove`).

This catches what a sandbox cannot see from outside (a machine without namespaces or Landlock, a new hole):
the crude form of reading labels from files. A cheater that regenerates the data is a matter for review.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..constants import N_CLASSES
from ..datasets.dataset import Dataset
from ..paths import cache_dir
from ..records import DEFAULT_RESULTS

FOLDER = "platebench-canary"
FOLLOW_AGREEMENT = 0.5
"""Agreement with one place's false labels from which predictions count as following it ..."""
FOLLOW_MARGIN = 0.25
"""... when it also exceeds the agreement with the true labels by this much."""


@dataclass(frozen=True)
class Canary:
    """False labels planted at ``root``: every target image's true label shifted by ``shift`` classes."""

    shift: int
    root: Path


def places() -> list[Path]:
    """Where a method might look for labels (each gets a canary folder of its own)."""
    out = [Path.cwd() / DEFAULT_RESULTS, DEFAULT_RESULTS.resolve(), cache_dir(), Path.home(),
           Path(tempfile.gettempdir())]
    unique: list[Path] = []
    for place in out:
        if place.resolve() not in [u.resolve() for u in unique]:
            unique.append(place)
    return unique[: N_CLASSES - 1]


def relabelled_copy(dataset: Dataset, plates: list[str], root: Path, shift: int = 1) -> Dataset:
    """Write to ``root`` a dataset with the same pixels whose treated rows of ``plates`` say class ``k + shift``
    (mod 8) instead of ``k``, with the compound and well of that class (the real JUMP layout maps wells to
    classes), so no column of its index tells the true class of those images."""
    from ..constants import POSCONS
    from ..datasets.dataset import open_dataset, write_dataset

    (root / "shards").mkdir(parents=True, exist_ok=True)
    for info in dataset.meta.shards:  # copied, not hard-linked: a sandbox refuses a link to a file it may only read
        (root / info.file).write_bytes((dataset.root / info.file).read_bytes())
    wells = {w: (k, i) for k, _, _, _, ws in POSCONS for i, w in enumerate(ws)}
    index = dataset.index
    hit = (index["plate"].is_in(plates) & ~index["is_control"]).to_numpy()
    labels, compounds, well_col = index["label"].to_list(), index["compound"].to_list(), index["well"].to_list()
    for row in np.flatnonzero(hit):
        new = (labels[row] + shift) % N_CLASSES
        labels[row], compounds[row] = new, POSCONS[new][2]
        well_col[row] = POSCONS[new][4][wells[well_col[row]][1] % 4] if well_col[row] in wells else well_col[row]
    index = index.with_columns(pl.Series("label", labels, dtype=pl.Int8), pl.Series("compound", compounds),
                               pl.Series("well", well_col))
    write_dataset(root, dataset.name, dataset.meta.version, dict(dataset.meta.settings) | {"scrambled": plates},
                  index, dataset.meta.shards)
    return open_dataset(root)


def plant(dataset: Dataset, target_ids: np.ndarray, where: list[Path] | None = None) -> list[Canary]:
    """Write the canaries of the target images ``target_ids`` of ``dataset`` (see module docstring): at each place
    a copy of the dataset whose target labels are false, and a run record with its predictions file."""
    target_ids = np.asarray(target_ids, dtype=np.int64)
    plates = sorted(set(dataset.index[target_ids]["plate"].to_list()))
    planted = []
    for shift, place in enumerate(where if where is not None else places(), start=1):
        root = place / FOLDER
        try:
            false = relabelled_copy(dataset, plates, root, shift)
            folder = root / "results" / f"{dataset.name}-{dataset.fingerprint}" / "canary" / "source_out"
            folder.mkdir(parents=True, exist_ok=True)
            predictions = false.index[target_ids].select("image_id", "plate", "source", "batch", "well", "site",
                                                         "label").with_columns(
                pl.lit("out_of_domain").alias("part"), pl.col("label").alias("predicted"))
            predictions.write_parquet(folder / "canary.predictions.parquet")  # not a record name: never loaded
            (folder / "canary.json").write_text(json.dumps({"status": "ok", "method": {"name": "canary"}}))
        except OSError:
            remove([Canary(shift, root)])
            continue  # a place this machine does not let us write: no canary there
        planted.append(Canary(shift, root))
    return planted


def followed(predictions: pl.DataFrame, canaries: list[Canary]) -> tuple[Canary, float, float] | None:
    """The canary whose false labels ``predictions`` (a run's predictions table: ``label``, ``predicted``) follow,
    with the agreement with it and with the true labels; None when they follow none."""
    if not len(predictions) or not canaries:
        return None
    labels = predictions["label"].to_numpy().astype(np.int64)
    predicted = predictions["predicted"].to_numpy().astype(np.int64)
    true = float(np.mean(predicted == labels))
    best = max(canaries, key=lambda c: float(np.mean(predicted == (labels + c.shift) % N_CLASSES)))
    agreement = float(np.mean(predicted == (labels + best.shift) % N_CLASSES))
    if agreement >= FOLLOW_AGREEMENT and agreement >= true + FOLLOW_MARGIN:
        return best, agreement, true
    return None


def remove(canaries: list[Canary]) -> None:
    """Remove the planted canary folders."""
    for canary in canaries:
        with contextlib.suppress(OSError):
            shutil.rmtree(canary.root)


__all__ = ["Canary", "FOLLOW_AGREEMENT", "FOLLOW_MARGIN", "followed", "places", "plant", "relabelled_copy", "remove"]
