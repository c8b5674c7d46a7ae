"""The tables of ``bench report``: confusion counts and accuracy per target plate, from a predictions table.

Pure functions: a polars predictions table (the records' ``*.predictions.parquet``, one row per
image, with ``fold`` and ``seed`` columns) in, arrays and frames out; :mod:`benchmark.report.figures`
draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

TARGET_PART = "out_of_domain"
"""The ``part`` of a predictions table that holds the target plates' images."""


def target_rows(predictions: pl.DataFrame) -> pl.DataFrame:
    """The target (out-of-domain) images of a predictions table."""
    return predictions.filter(pl.col("part") == TARGET_PART)


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts: row = true class, column = predicted class."""
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_shares(counts: np.ndarray) -> np.ndarray:
    """Each row of ``counts`` divided by its sum (a row without images stays 0)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def plate_accuracy(predictions: pl.DataFrame) -> pl.DataFrame:
    """Accuracy of every target plate in every run: ``source, batch, plate, fold, seed, n_images, accuracy``."""
    return (target_rows(predictions)
            .group_by("source", "batch", "plate", "fold", "seed")
            .agg(n_images=pl.len(), accuracy=(pl.col("label") == pl.col("predicted")).mean())
            .sort("source", "batch", "plate", "fold", "seed"))


@dataclass(frozen=True)
class PlateGrid:
    """The plate heatmap: ``values[i, j]`` is the accuracy of row ``i`` of ``rows`` in seed ``seeds[j]``."""

    rows: pl.DataFrame  # source, batch, plate, fold; sorted by source, then batch, plate and fold
    seeds: list[int]
    values: np.ndarray  # NaN where a plate has no run of that seed


def plate_grid(table: pl.DataFrame) -> PlateGrid:
    """The heatmap of a :func:`plate_accuracy` table: one row per (plate, fold), one column per seed."""
    rows = table.select("source", "batch", "plate", "fold").unique().sort("source", "batch", "plate", "fold")
    seeds = sorted(table["seed"].unique().to_list())
    where = {key: i for i, key in enumerate(rows.iter_rows())}
    values = np.full((len(rows), len(seeds)), np.nan)
    for source, batch, plate, fold, seed, accuracy in table.select("source", "batch", "plate", "fold", "seed",
                                                                   "accuracy").iter_rows():
        values[where[(source, batch, plate, fold)], seeds.index(seed)] = accuracy
    return PlateGrid(rows, seeds, values)


def group_spans(keys: Sequence[Any]) -> list[tuple[Any, int, int]]:
    """``(key, first, last)`` of every run of equal consecutive ``keys``."""
    spans: list[tuple[Any, int, int]] = []
    for i, key in enumerate(keys):
        if spans and spans[-1][0] == key:
            spans[-1] = (key, spans[-1][1], i)
        else:
            spans.append((key, i, i))
    return spans
