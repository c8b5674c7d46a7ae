"""``label_shift``: each target plate holds a different mix of classes, drawn from a Dirichlet.

A real screening plate is anything but balanced. At level α the class proportions of a
target plate are drawn from Dirichlet(α·1) over the classes present on it (α = ``inf``:
equal proportions), and the plate's treated images are subsampled to them. Every level
keeps the same number of treated images per plate, ``n`` = the plate's count of its
rarest class, the largest number that every α can meet (even one class alone), so accuracy
compares across levels; the ``inf`` level is therefore a balanced *subsample* of the plate,
not the plain evaluation. Counts are ``n``·p rounded by largest remainder; images of a
class are drawn without replacement. The plate's DMSO images are never cut.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from ..datasets.dataset import Dataset
from ..methods.base import AccessLevel
from .base import Drawn, PlateCase

LEVELS = ("inf", "1", "0.1", "0.01")


def proportions(alpha: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class proportions: uniform for ``alpha = inf``, else one draw of Dirichlet(alpha·1)."""
    if math.isinf(alpha):
        return np.full(n_classes, 1.0 / n_classes)
    p = rng.dirichlet(np.full(n_classes, alpha))
    if not np.isfinite(p).all() or p.sum() <= 0:  # underflow at tiny alpha: all mass on one class
        p = np.zeros(n_classes)
        p[rng.integers(n_classes)] = 1.0
    return p / p.sum()


def allocate(n: int, p: np.ndarray) -> np.ndarray:
    """``n`` items split by proportions ``p`` (largest-remainder rounding; sums to ``n``)."""
    raw = n * np.asarray(p, dtype=np.float64)
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


class LabelShift(Drawn):
    """Dirichlet(α) class proportions per target plate, same number of images at every α."""

    name = "label_shift"
    levels = LEVELS
    description = ("target plates subsampled to Dirichlet(α) class proportions (α = inf: balanced), "
                   "same images per plate at every α (the plate's rarest-class count)")

    def not_applicable(self, dataset: Dataset) -> str | None:
        return None

    def plain_level(self, dataset: Dataset) -> str | None:
        return None  # every level is a subsample; none is the plain evaluation

    def unchanged_for(self, access: AccessLevel) -> bool:
        return False  # the scored images change for every method

    def describe_level(self, level: str) -> str:
        return "balanced subsample" if level == "inf" else f"Dirichlet(α = {level}) class proportions"

    def cases(self, dataset: Dataset, level: str, plate: str, treated_ids: np.ndarray,
              control_ids: np.ndarray) -> list[PlateCase]:
        rng = self.case_rng(dataset, level, plate)
        labels = dataset.index[np.asarray(treated_ids, dtype=np.int64)]["label"].to_numpy()
        classes, counts = np.unique(labels, return_counts=True)
        want = allocate(int(counts.min()), proportions(float(level), len(classes), rng))
        kept = [rng.choice(np.asarray(treated_ids)[labels == c], size=k, replace=False)
                for c, k in zip(classes, want) if k > 0]
        ids = np.sort(np.concatenate(kept)).astype(np.int64)
        return [PlateCase(plate, ids, np.asarray(control_ids, dtype=np.int64), dataset)]


def classes_present(index: pl.DataFrame, ids: np.ndarray) -> float:
    """Mean number of classes per plate among ``ids`` (how concentrated a level's plates are)."""
    rows = index[np.asarray(ids, dtype=np.int64)]
    if not len(rows):
        return float("nan")
    return float(rows.group_by("plate").agg(pl.col("label").n_unique())["label"].mean())


__all__ = ["LEVELS", "LabelShift", "allocate", "classes_present", "proportions"]
