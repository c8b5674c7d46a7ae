"""intensity_stats — a strong simple baseline: whole-image intensity statistics, standardised
per plate with the plate's DMSO images, and a multinomial logistic regression.

Access: ``controls``. Each image is summarised by 7 statistics of each of its 5 channels'
grey-level distribution (:mod:`benchmark.core.profiles.intensity`: mean, standard deviation, the
10/50/90/99 % quantiles and the percentage of saturated pixels; 35 numbers, no spatial
information). On every plate these are standardised with their
mean and standard deviation over that plate's DMSO images (floor of half a grey level
on the standard deviation), which removes per-plate gains and offsets of stain, exposure
and illumination the way TVN and BEN do. A multinomial logistic regression (features
standardised over the training images, fixed ``C``, no training epochs and no model
selection) classifies the MoA. At test time a target plate contributes only its DMSO
images, through the standardisation; every treated image is classified on its own.

Why it is on the leaderboard: it is the "morphology not needed" yardstick. If intensity
statistics alone reach the accuracy of the ResNets, the dataset lets a method solve the
task without looking at cells, and a gain of a deep method over it is what morphology
adds. It is kept on the table on purpose, whatever it scores (issue 11). On sim-1.5 it scored,
seed 0, in-domain / batch_out / source_out: 0.92 / 0.90 / 0.88, above every ResNet there; the
leaderboard shows what it scores on the current default.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..config_bounds import at_least, positive
from ..constants import N_CLASSES
from ..core.profiles.intensity import MIN_STD, channel_statistics, feature_names, standardise_by_controls
from ..datasets.dataset import LabelledImages, PlateView
from ..errors import MethodError
from ..registry import register_method
from .base import AccessLevel, Method, MethodConfig


@dataclasses.dataclass(frozen=True)
class IntensityStatsConfig(MethodConfig):
    """intensity_stats hyper-parameters."""

    C: float = 1.0           # inverse L2 regularisation strength of the logistic regression (fixed, not selected)
    min_std: float = MIN_STD  # floor on each feature's DMSO standard deviation in the per-plate standardisation
    max_iter: int = 5000     # iteration limit of the lbfgs solver

    bounds = {"C": positive(), "min_std": positive(), "max_iter": at_least(1)}


@register_method
class IntensityStats(Method):
    """Per-channel intensity statistics, standardised by the plate's DMSO images, multinomial logistic regression."""

    name = "intensity_stats"
    access = AccessLevel.CONTROLS
    description = ("whole-image per-channel intensity statistics standardised by the plate's DMSO images + "
                   "logistic regression (no morphology)")
    Config = IntensityStatsConfig
    config: IntensityStatsConfig
    quick_overrides = {}

    def _control_features(self, plate: str, controls: np.ndarray) -> np.ndarray:
        if len(controls) < 2:
            raise MethodError(f"plate {plate} has {len(controls)} DMSO images; {self.name} needs at least 2 to "
                              "standardise the plate's features (mean and std over its DMSO images)")
        return channel_statistics(controls)

    def _plate_features(self, data: LabelledImages) -> tuple[np.ndarray, np.ndarray]:
        """DMSO-standardised features of the treated images of every plate of ``data``, and their labels."""
        xs, ys = [], [np.empty(0, dtype=np.int64)]
        for plate in data.plates:
            treated = data.treated_ids(plate)
            if len(treated) == 0:
                continue
            controls = self._control_features(plate, data.read(data.control_ids(plate)))
            xs.append(standardise_by_controls(channel_statistics(data.read(treated)), controls, self.config.min_std))
            ys.append(data.labels(treated))
        x = np.concatenate(xs).astype(np.float64) if xs else np.empty((0, 0))
        return x, np.concatenate(ys)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(x), N_CLASSES))
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        probs[:, self.classifier_.classes_] = self.classifier_.predict_proba(z)
        return probs

    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> IntensityStats:
        from sklearn.linear_model import LogisticRegression  # imported here: sklearn takes seconds to load
        from sklearn.metrics import log_loss

        start = time.perf_counter()
        x, y = self._plate_features(train)
        if len(x) == 0:
            raise MethodError(f"{self.name}: the training set has no treated images to learn from")
        self.mean_, self.scale_ = x.mean(axis=0), x.std(axis=0) + 1e-6
        self.classifier_ = LogisticRegression(C=self.config.C, max_iter=self.config.max_iter,
                                              random_state=seed).fit((x - self.mean_) / self.scale_, y)
        report = {"features": feature_names(), "C": self.config.C, "epochs_run": None, "best_epoch": None,
                  "selection": "none (fixed C; no model selection)",
                  "solver_iterations": int(np.max(self.classifier_.n_iter_)),
                  "train_accuracy": float((self.classifier_.predict((x - self.mean_) / self.scale_) == y).mean())}
        x_val, y_val = self._plate_features(val) if len(val.treated_ids()) else (x[:0], y[:0])
        if len(y_val):
            p_val = self._probabilities(x_val)
            report |= {"val_loss": float(log_loss(y_val, p_val, labels=range(N_CLASSES))),
                       "val_accuracy": float((p_val.argmax(1) == y_val).mean())}
        seconds = time.perf_counter() - start
        self.fit_report_ = report | {"train_seconds": round(seconds, 3)}
        return self

    def adapt(self, plate: PlateView) -> IntensityStats:
        self._check_fitted("classifier_")
        for attr in ("plate_", "controls_"):  # forget the previous plate, even if this one fails
            self.__dict__.pop(attr, None)
        self.controls_ = self._control_features(plate.plate, plate.controls)
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("classifier_")
        self._check_adapted()
        x = standardise_by_controls(channel_statistics(images), self.controls_, self.config.min_std)
        return self._probabilities(x)
