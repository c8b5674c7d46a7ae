"""Scores of one evaluation: accuracy (primary), balanced accuracy, macro-F1, per-plate and
worst-plate accuracy, expected calibration error; and a seeded bootstrap confidence interval
that resamples folds, then seeds within them.

All functions are pure: arrays in, numbers out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

ECE_BINS = 15
"""Number of equal-width confidence bins of :func:`expected_calibration_error`."""
BOOTSTRAP_REPLICATES = 10_000
"""Default number of replicates of :func:`bootstrap_ci`."""


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of correct predictions (the benchmark's primary metric)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(labels == predicted))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    if len(labels) == 0:
        return float("nan")
    import warnings

    from sklearn.metrics import balanced_accuracy_score  # imported late: sklearn loads slowly

    with warnings.catch_warnings():  # predicting a class absent from the labels is normal under label shift
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels, predicted))


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 scores over the classes that occur in labels or predictions."""
    if len(labels) == 0:
        return float("nan")
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predicted, average="macro", zero_division=0))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins of the top-class confidence.

    ``ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|``; bin ``b`` holds the
    confidences in ``(b/n_bins, (b+1)/n_bins]`` (a confidence of 0 falls into the first bin).

    Examples
    --------
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    >>> round(expected_calibration_error(probs, np.array([0, 1])), 6)  # |1-0.9|/2 + |0-0.6|/2
    0.35
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = np.digitize(confidence, inner_edges, right=True)  # bin b: edges[b] < c <= edges[b+1]
    ece = 0.0
    for b in np.unique(bins):
        members = bins == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def per_plate_accuracy(labels: np.ndarray, predicted: np.ndarray, plates: Sequence[str]) -> dict[str, float]:
    """Accuracy of each plate, keyed by plate name (sorted)."""
    labels, predicted, plates = np.asarray(labels), np.asarray(predicted), np.asarray(plates)
    return {str(p): accuracy(labels[plates == p], predicted[plates == p]) for p in sorted(set(plates.tolist()))}


def classification_metrics(labels: np.ndarray, probs: np.ndarray, plates: Sequence[str]) -> dict[str, Any]:
    """All metrics of DESIGN.md §3 for one part of an evaluation (e.g. the target plates).

    Returns a JSON-ready dict: ``accuracy, balanced_accuracy, macro_f1, ece,
    mean_plate_accuracy, worst_plate_accuracy, worst_plate, n_images, n_plates``.
    """
    labels, probs = np.asarray(labels), np.asarray(probs)
    predicted = probs.argmax(axis=1) if len(probs) else np.empty(0, dtype=np.int64)
    plate_acc = per_plate_accuracy(labels, predicted, plates)
    worst = min(plate_acc, key=plate_acc.__getitem__) if plate_acc else None
    return {
        "accuracy": accuracy(labels, predicted),
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted),
        "ece": expected_calibration_error(probs, labels) if len(labels) else float("nan"),
        "mean_plate_accuracy": float(np.mean(list(plate_acc.values()))) if plate_acc else float("nan"),
        "worst_plate_accuracy": plate_acc[worst] if worst is not None else float("nan"),
        "worst_plate": worst,
        "n_images": int(len(labels)),
        "n_plates": len(plate_acc),
    }


def bootstrap_ci(by_fold: Mapping[Hashable, Sequence[float]], level: float = 0.95,
                 n_boot: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> tuple[float, float]:
    """Two-stage (hierarchical) percentile bootstrap CI of the mean over runs, resampling folds.

    The units that vary are the folds (held-out sources or batches), not the runs: the seeds
    of one fold share its held-out data. Each of ``n_boot`` replicates draws the folds with
    replacement, then, within each drawn fold, that fold's seed values with replacement, and
    takes the mean of all values drawn (the leaderboard's mean over folds × seeds). The CI is
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates, so ``k`` folds
    give the width of ``k`` observations whatever the number of seeds.

    Fewer than two folds (after dropping empty ones) give ``(nan, nan)``: a single held-out
    source or batch says nothing about another one, whatever its seeds do. With few folds
    (4 sources) the percentile interval is still optimistic: a bootstrap sees only the folds
    it has.

    Own code, not :func:`scipy.stats.bootstrap`: scipy resamples independent observations
    (optionally paired across samples) and has no nested resampling; the second stage would
    have to be a random draw inside its statistic, which its BCa and basic methods assume is
    deterministic, and the numbers would hinge on how scipy batches its calls. The two stages
    here are two seeded draws of one :func:`numpy.random.default_rng` generator (reproducible).

    Parameters
    ----------
    by_fold
        The values of each fold's runs (one per seed), keyed by fold.
    level
        Confidence level.
    n_boot
        Number of bootstrap replicates.
    seed
        Seed of the resampling.

    Examples
    --------
    >>> bootstrap_ci({0: [0.5, 0.5], 1: [0.5, 0.5, 0.5]})
    (0.5, 0.5)
    >>> bootstrap_ci({0: [0.6, 0.7, 0.8]})  # one fold: no CI
    (nan, nan)
    """
    if not isinstance(by_fold, Mapping):
        raise TypeError(f"bootstrap_ci takes {{fold: [the values of its seeds]}}, got {type(by_fold).__name__}; "
                        "group the runs by fold (the CI resamples folds, then seeds within them)")
    folds = [np.asarray(v, dtype=np.float64) for v in by_fold.values() if len(v)]
    if len(folds) < 2:
        return float("nan"), float("nan")
    sizes = np.array([len(f) for f in folds])
    table = np.zeros((len(folds), sizes.max()))  # fold x seed, padded
    for i, f in enumerate(folds):
        table[i, :len(f)] = f
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(folds), size=(n_boot, len(folds)))  # stage 1: folds
    n = sizes[drawn][..., None]
    seeds = rng.integers(0, n, size=(*drawn.shape, sizes.max()))  # stage 2: seeds within each drawn fold
    used = np.arange(sizes.max()) < n  # a fold of n seeds contributes n draws
    means = np.where(used, table[drawn[..., None], seeds], 0.0).sum(axis=(1, 2)) / n.sum(axis=(1, 2))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value, nan for none)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else 0.0)
