"""Helpers shared by the performance suite: subsets of the suite's datasets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from benchmark.datasets.dataset import Dataset, LabelledImages, PlateView


def subset(dataset: Dataset, plates: list[str], targets: Sequence[PlateView] = (),
           per_label: int | None = None) -> LabelledImages:
    """The labelled images of ``plates`` (with label-free ``targets`` views for a transductive fit); with
    ``per_label``, only the first ``per_label`` images of each class and ``4 * per_label`` DMSO images of each plate."""
    rows = dataset.index.filter(pl.col("plate").is_in(plates))
    if per_label is not None:
        keep = pl.when(pl.col("is_control")).then(4 * per_label).otherwise(per_label)
        rows = rows.filter(pl.int_range(pl.len()).over("plate", "label") < keep)
    return dataset.labelled(rows, targets)


def plates_of(dataset: Dataset) -> list[str]:
    """The dataset's plates in index order."""
    return dataset.index["plate"].unique(maintain_order=True).to_list()


def pooled_plate(dataset: Dataset, plates: list[str], n_treated: int, n_controls: int,
                 name: str = "benchmark_plate") -> PlateView:
    """One label-free plate view named ``name`` pooling the first ``n_treated`` treated and ``n_controls`` DMSO
    images of ``plates`` (index order), as lazily read arrays."""
    rows = dataset.index.filter(pl.col("plate").is_in(plates))
    control = rows["is_control"].to_numpy()
    ids = rows["image_id"].to_numpy().astype(np.int64)
    return PlateView(name, dataset.image_array(ids[~control][:n_treated]),
                     dataset.image_array(ids[control][:n_controls]))
