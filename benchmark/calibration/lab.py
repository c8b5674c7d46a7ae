"""The lab probe: can a linear classifier tell the lab (source) of an image from its channel statistics?

Features: :func:`benchmark.core.profiles.intensity.channel_statistics` of every image (treated and
DMSO), *not* standardised per plate: the probe asks how visible each lab's microscope is in
raw intensities. Classifier: standardisation + multinomial logistic regression. Score:
accuracy of cross-validated predictions, folds **grouped by plate** (a plate's images are
all in the training part or all in the test part, so the classifier can not recognise a
plate it has seen) and stratified by source. At severity 0 every lab has the same
microscope, so accuracy should sit near chance, 1 / number of sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..datasets import Dataset
from ..errors import BenchError

MAX_FOLDS = 5


@dataclass(frozen=True)
class LabSeparability:
    """Cross-validated accuracy of the lab classifier, and chance."""

    accuracy: float
    chance: float
    n_images: int
    n_folds: int
    severity: float | None  # the dataset's severity setting (None: not a simulated dataset)


def plate_features(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, source, plate) of every image, read plate by plate (bounded memory)."""
    from ..core.profiles.intensity import channel_statistics

    feats, sources, plates = [], [], []
    for (plate,), rows in dataset.index.sort("image_id").group_by("plate", maintain_order=True):
        feats.append(channel_statistics(dataset.read(rows["image_id"].to_numpy())))
        sources += rows["source"].to_list()
        plates += [plate] * len(rows)
    return np.concatenate(feats), np.asarray(sources), np.asarray(plates)


def lab_separability(dataset: Dataset, seed: int = 0) -> LabSeparability:
    """Accuracy of a linear classifier of the source, cross-validated with folds grouped by plate.

    The number of folds is ``min(5, fewest plates of a source)``, so that every source keeps
    training plates in every fold.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_source = dataset.index.group_by("source").agg(pl.col("plate").n_unique())["plate"]
    if len(per_source) < 2:
        raise BenchError(f"dataset '{dataset.name}' has {len(per_source)} source(s); the lab probe needs at least 2")
    n_folds = min(MAX_FOLDS, int(per_source.min()))
    if n_folds < 2:
        raise BenchError(f"a source of dataset '{dataset.name}' has a single plate; the lab probe's folds are "
                         "grouped by plate and need at least 2 plates per source")
    x, y, groups = plate_features(dataset)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(model, x, y, groups=groups, cv=folds)
    severity = dataset.meta.settings.get("severity")
    return LabSeparability(float(np.mean(predicted == y)), 1 / len(per_source), len(y), n_folds,
                           None if severity is None else float(severity))
