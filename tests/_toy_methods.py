"""Small but real test-only methods (named ``_test_...``).

Features of an image: per-channel means of its four quadrants (20 numbers). The
classifier: nearest class centroid, probabilities = softmax of minus squared distances.

Importing this module registers nothing: a test that runs these methods by name asks for
the ``toy_methods`` fixture (tests/conftest.py), which registers :data:`TOY_METHODS` for
its module's tests and removes them afterwards. A sealed worker finds a method by its
module and class name, without the registry. A sweep's worker process finds one by
importing its module (``benchmark.sweep.unit``), so there, and only where
``$PLATEBENCH_TEST_REGISTER_TOYS`` is set (fixture ``toy_methods_in_workers``), importing
this module registers them, as a local method's module does.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from benchmark.errors import MethodError
from benchmark.methods.base import AccessLevel, Method, MethodConfig
from benchmark.registry import register_method


def features(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64)
    h, w = x.shape[2] // 2, x.shape[3] // 2
    quads = [x[:, :, :h, :w], x[:, :, :h, w:], x[:, :, h:, :w], x[:, :, h:, w:]]
    return np.concatenate([q.mean(axis=(2, 3)) for q in quads], axis=1)


def _standardise(f: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (f - ref.mean(axis=0)) / (ref.std(axis=0) + 1e-6)


@dataclasses.dataclass(frozen=True)
class CentroidConfig(MethodConfig):
    temperature: float = 1.0
    """Softmax temperature on minus squared distances."""
    epochs: int = 10
    """Unused by the math; lets tests override an int."""


class Centroid(Method):
    """Nearest centroid on globally standardised features; sees nothing of the target."""

    name = "_test_centroid"
    access = AccessLevel.NONE
    description = "test: nearest class centroid"
    Config = CentroidConfig
    quick_overrides = {"epochs": 1}

    def _plate_features(self, data, ids, plate):  # features as the method sees them in training
        return features(data.read(ids))

    def fit(self, train, val, seed):
        feats, labels = [], []
        for plate in train.plates:
            ids = train.treated_ids(plate)
            feats.append(self._plate_features(train, ids, plate))
            labels.append(train.labels(ids))
        f, y = np.concatenate(feats), np.concatenate(labels)
        self.ref_ = f
        self.centroids_ = np.stack([f[y == k].mean(axis=0) for k in range(8)])
        self.fit_report_ = {"n_train": len(y), "n_val": len(val.treated_ids()), "seed": seed}
        self.model_ = True
        return self

    def adapt(self, plate):
        self._check_fitted()
        self.plate_ = plate.plate
        return self

    def _transform(self, f):
        return f

    def predict(self, images):
        self._check_adapted()
        f = self._transform(features(images))
        d = ((f[:, None, :] - self.centroids_[None]) ** 2).sum(-1) / f.shape[1]
        z = -d / self.config.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


class ControlStd(Centroid):
    """Standardises every plate by its DMSO images' features (access: controls)."""

    name = "_test_ctrl_std"
    access = AccessLevel.CONTROLS
    description = "test: per-plate DMSO standardisation + centroid"

    def _plate_features(self, data, ids, plate):
        return _standardise(features(data.read(ids)), features(data.read(data.control_ids(plate))))

    def adapt(self, plate):
        self._check_fitted()
        self.plate_ = plate.plate
        self.ctrl_ = features(plate.controls[:])
        self.seen_ = (len(plate.treated), len(plate.controls))
        return self

    def _transform(self, f):
        return _standardise(f, self.ctrl_)


class PlateStd(Centroid):
    """Standardises every plate by its own treated images' features (access: unlabeled)."""

    name = "_test_plate_std"
    access = AccessLevel.UNLABELED
    description = "test: per-plate standardisation + centroid"

    def _plate_features(self, data, ids, plate):
        f = features(data.read(ids))
        return _standardise(f, f)

    def adapt(self, plate):
        self._check_fitted()
        self.plate_ = plate.plate
        self.ref_plate_ = features(plate.treated[:])
        self.seen_ = (len(plate.treated), len(plate.controls))
        return self

    def _transform(self, f):
        return _standardise(f, self.ref_plate_)


class FailFit(Centroid):
    name = "_test_fail_fit"
    description = "test: raises in fit"

    def fit(self, train, val, seed):
        raise RuntimeError("boom in fit")


class FailAdapt(Centroid):
    name = "_test_fail_adapt"
    description = "test: raises in adapt"

    def adapt(self, plate):
        raise ValueError(f"cannot adapt to {plate.plate}")


class NanLoss(Centroid):
    name = "_test_nan_loss"
    description = "test: NaN training loss"

    def fit(self, train, val, seed):
        raise MethodError("training loss became NaN at epoch 2; lower the learning rate (--set lr=...)")


class NanPredict(Centroid):
    name = "_test_nan_predict"
    description = "test: predicts NaN"

    def predict(self, images):
        return np.full((len(images), 8), np.nan)


class Logits(Centroid):
    name = "_test_logits"
    description = "test: returns logits"

    def predict(self, images):
        return np.log(super().predict(images) + 1e-9)


class WrongShape(Centroid):
    name = "_test_wrong_shape"
    description = "test: returns 7 columns"

    def predict(self, images):
        return super().predict(images)[:, :7]


class SeedFail(Centroid):
    """Fails for seed 1 only (to show that other runs go on)."""

    name = "_test_seed_fail"
    description = "test: fails for seed 1"

    def fit(self, train, val, seed):
        if seed == 1:
            raise RuntimeError("seed 1 is cursed")
        return super().fit(train, val, seed)


class Flaky(Centroid):
    """Fails unless ``$PLATEBENCH_TEST_FLAKY_FIXED`` is set (to show that a failed record is retried).

    An environment variable, not a class attribute: the method runs in a sealed worker, which
    gets the evaluator's environment but not its objects.
    """

    name = "_test_flaky"
    description = "test: fails while broken"

    def fit(self, train, val, seed):
        if not os.environ.get("PLATEBENCH_TEST_FLAKY_FIXED"):
            raise RuntimeError("flaky failure")
        return super().fit(train, val, seed)


class TransductiveStd(Centroid):
    """Standardises every image by the pooled features of the target plates it got in fit (access: transductive)."""

    name = "_test_transductive"
    access = AccessLevel.TRANSDUCTIVE
    description = "test: standardise by the target plates seen in fit + centroid"

    def fit(self, train, val, seed):
        super().fit(train, val, seed)
        self.target_ref_ = np.concatenate([features(v.treated[:]) for v in train.targets]) if train.targets \
            else self.ref_
        self.fit_report_["targets"] = [[v.plate, len(v.treated), len(v.controls)] for v in train.targets]
        self.fit_report_["val_targets"] = len(val.targets)
        return self

    def _transform(self, f):
        return _standardise(f, self.target_ref_)


TOY_METHODS = (Centroid, ControlStd, PlateStd, FailFit, FailAdapt, NanLoss, NanPredict, Logits, WrongShape, SeedFail,
               Flaky, TransductiveStd)
"""Every method of this module, as the ``toy_methods`` fixture registers them."""

REGISTER_ENV = "PLATEBENCH_TEST_REGISTER_TOYS"
"""Set in a process that finds a method by importing its module (a sweep's worker): importing registers them."""

if os.environ.get(REGISTER_ENV):
    for _cls in TOY_METHODS:
        register_method(_cls)
