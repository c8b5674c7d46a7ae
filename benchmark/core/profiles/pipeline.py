"""The profile pipeline's pieces, which every profile method (``profile_*``) runs through
:class:`benchmark.methods._profile.ProfileMethod`: featuriser → embeddings → correction → one logistic
regression → per-image probabilities.

1. A frozen **featuriser** (:mod:`~benchmark.core.profiles.featurisers`: the shipped self-supervised
   encoder, any ``fm_tvn`` encoder backend, or ERM's penultimate layer) embeds every image
   ``fit`` sees: the training and validation plates (treated and DMSO) and, for a transductive
   method, the target plates of ``train.targets``. Embeddings are kept by image content in the
   fold's models folder (:mod:`~benchmark.core.profiles.embedding_cache`), so each image of a fold is
   embedded once per featuriser, whatever the seed or the correction.
2. A **correction** (:mod:`~benchmark.core.profiles.corrections`) is fitted on those profiles and
   gives each plate a transform (per-plate ones from the plate's DMSO embeddings).
3. The **classifier** is the same for every correction (:class:`ProfileClassifier`): features
   standardised over the corrected training images, a multinomial logistic regression whose
   ``C`` is chosen by validation log loss.
4. ``adapt`` builds the target plate's transform (from its DMSO images, or from the joint fit);
   ``predict`` embeds, corrects and classifies each image on its own.

The pipeline works on **images**: a target plate's wells never reach a method (its treated
images arrive shuffled, without ids), so corrections are fitted and applied per image. The
well level (mean over sites) is built where wells are known, on the training and validation
plates, and the **correction metrics** (:mod:`benchmark.core.profiles.metrics`) are computed there,
on the uncorrected and the corrected well profiles, with the source (lab) as the batch; they go
into the fit report, hence into every run record (``fit_report.correction_metrics``). The
uncorrected scores, shared by every method of a fold and seed, are kept in the fold's models
folder (:mod:`~benchmark.core.profiles.metrics_cache`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...constants import N_CLASSES
from .metrics import correction_scores
from .metrics_cache import cached_scores
from ...errors import MethodError
from .corrections import Correction
from .data import Profiles, well_profiles

METRICS_BATCH = "source"
"""The batch of the correction metrics: the lab, which is what a new target domain brings."""


def parse_grid(text: str) -> list[float]:
    """The inverse regularisation strengths of a comma-separated ``c_grid`` (positive numbers)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise MethodError(f"c_grid {text!r} is not a comma-separated list of positive numbers (e.g. '0.01,0.1,1,10')")
    return values


@dataclasses.dataclass
class ProfileClassifier:
    """Standardisation over the training profiles and a multinomial logistic regression (``C`` by validation loss)."""

    mean: np.ndarray
    scale: np.ndarray
    model: Any
    C: float
    val_loss: float | None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, c_grid: list[float],
            seed: int) -> ProfileClassifier:
        from sklearn.linear_model import LogisticRegression  # imported here: sklearn takes seconds to load
        from sklearn.metrics import log_loss

        if len(x) == 0:
            raise MethodError("the profile classifier has no labelled treated training images to learn from")
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        best = None
        for c in c_grid:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((x - mean) / scale, y)
            candidate = cls(mean, scale, model, c, None)
            loss = (float(log_loss(y_val, candidate.probabilities(x_val), labels=range(N_CLASSES)))
                    if len(y_val) else None)
            if best is None or (loss is not None and loss < best.val_loss):
                best = dataclasses.replace(candidate, val_loss=loss)
        return best

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, 8)`` of profiles ``x`` (classes missing from training get 0)."""
        probs = np.zeros((len(x), N_CLASSES))
        if len(x):
            z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
            probs[:, self.model.classes_] = self.model.predict_proba(z)
        return probs


def correct(correction: Correction, profiles: Profiles) -> Profiles:
    """Every plate's rows through that plate's transform (built from its DMSO rows); the width may change."""
    plates = profiles.plate.astype(str)
    out: np.ndarray | None = None
    for plate in np.unique(plates):
        rows = plates == plate
        transform = correction.plate(plate, profiles.x[rows & profiles.is_control])
        corrected = transform(profiles.x[rows])
        if out is None:
            out = np.empty((len(profiles), corrected.shape[1]), dtype=np.float32)
        out[rows] = corrected
    return profiles.with_x(out if out is not None else profiles.x)


def well_scores(wells: Profiles, seed: int) -> dict[str, Any]:
    """The correction metrics of well profiles, with the source as the batch."""
    return correction_scores(wells.x, wells.source.astype(str), wells.label, wells.plate.astype(str),
                             wells.is_control, seed=seed)


def metrics_before_after(raw: Profiles, corrected: Profiles, seed: int, folder: str | None = None) -> dict[str, Any]:
    """Correction metrics of the labelled plates' well profiles, uncorrected and corrected.

    The uncorrected scores, the same for every profile method of a fold, seed and featuriser, are
    kept in ``folder`` (the fold's models folder; :mod:`~benchmark.core.profiles.metrics_cache`) when given.
    """
    out: dict[str, Any] = {"level": "well (mean over sites)", "plates": "training and validation",
                           "batch": METRICS_BATCH, "dmso": "excluded from batch and label scores"}
    before = well_profiles(raw.select(raw.labelled))
    out["before"], out["before_read_from_cache"] = cached_scores(folder, before, seed,
                                                                lambda: well_scores(before, seed))
    if np.array_equal(raw.x, corrected.x):  # no correction: the same scores
        out["after"] = dict(out["before"])
    else:
        out["after"] = well_scores(well_profiles(corrected.select(corrected.labelled)), seed)
    return out
