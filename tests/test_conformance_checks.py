"""Conformance checks: every registered method passes them; each broken method fails the right one, loudly.

Also the leakage guards of the API: a method reaching for target labels fails with a clear error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from _check_env import check_cache  # noqa: F401  (autouse fixture)
from _toy_methods import Centroid, ControlStd, PlateStd, features
from benchmark.conformance.checks import CHECKS, assert_check, check_data, iter_checks
from benchmark.datasets.dataset import PlateView
from benchmark.errors import LeakageError
from benchmark.methods.base import AccessLevel, MethodConfig
from benchmark.registry import available_methods

PUBLIC = [name for name in available_methods() if not name.startswith("_")]


@pytest.fixture(scope="module")
def cell_features_measured_once():
    """CellProfiler features measured once per image in this process, not once per encoder instance: the checks
    that fit or adapt again (no_state_across_plates, deterministic) reuse what the first fit measured. What they
    check is the method's state and determinism; the featuriser's own determinism is
    test_core_cells_cellprofiler.py's, and the ``sealed`` check still measures every image afresh in its worker
    and compares the predictions with these."""
    from benchmark.core.cells import cellprofiler

    class Shared(dict):
        def __deepcopy__(self, memo):  # the checks deep-copy the fitted method: its copies share the memo
            return self

    memos: dict = {}
    init = cellprofiler.CellProfilerEncoder.__init__

    def shared(self, settings=cellprofiler.Settings()):
        init(self, settings)
        self._memo = memos.setdefault(settings, Shared())

    mp = pytest.MonkeyPatch()
    mp.setattr(cellprofiler.CellProfilerEncoder, "__init__", shared)
    yield memos
    mp.undo()


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("method", PUBLIC)
def test_registered_method_passes(method, check, request):
    if method == "cellprofiler":
        request.getfixturevalue("cell_features_measured_once")
    assert_check(method, check)


def results(cls) -> dict[str, tuple[str, str]]:
    return {r.check: (r.status, r.message) for r in iter_checks(cls, check_data())}


def failed(cls, check: str) -> str:
    status, message = results(cls)[check]
    assert status == "failed", (check, status, message)
    return message


# -- broken methods (not registered), each breaking one property -----------------------------

class FailsInFit(Centroid):
    def fit(self, train, val, seed):
        raise RuntimeError("boom in fit\nsecond line of a long message")


class WrongShape(Centroid):
    def predict(self, images):
        return super().predict(images)[:, :7]


class Logits(Centroid):
    def predict(self, images):
        return np.log(super().predict(images) + 1e-9)


class RemembersPlates(ControlStd):
    """Pools the DMSO features of every plate it has seen."""

    def adapt(self, plate):
        new = features(plate.controls[:])
        self.ctrl_ = np.concatenate([getattr(self, "ctrl_", new[:0]), new])
        self.plate_ = plate.plate
        return self


class Random(Centroid):
    def fit(self, train, val, seed):
        super().fit(train, val, seed)
        self.centroids_ = self.centroids_ + np.random.default_rng().normal(0, 5, self.centroids_.shape)
        return self


class ReadsTreated(ControlStd):
    """Declares controls but standardises with the view's treated images when it gets them."""

    def adapt(self, plate):
        super().adapt(plate)
        if len(plate.treated):
            self.ctrl_ = features(plate.treated[:])
        return self


class BatchNormalised(PlateStd):
    """Declares none but standardises every predict() batch by itself."""
    access = AccessLevel.NONE

    def adapt(self, plate):
        self.plate_ = plate.plate
        return self

    def _transform(self, f):
        return (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-6)


class PeeksAtLabels(Centroid):
    """Cheats: finds the dataset index through the files behind the view and returns the true labels."""
    access = AccessLevel.UNLABELED

    def adapt(self, plate):
        store = plate.treated._store
        index = pl.read_parquet(store.root / "index.parquet")
        where = dict(zip(zip(index["shard"], index["offset"]), index["label"]))
        self.labels_ = np.array([int(where[(c, o)]) for c, o in zip(plate.treated._codes, plate.treated._offsets)])
        self.plate_ = plate.plate
        return self

    def predict(self, images):
        return np.eye(8)[self.labels_[:len(images)]]


@dataclasses.dataclass(frozen=True)
class NoDefaultConfig(MethodConfig):
    alpha: float


class NeedsAValue(Centroid):
    Config = NoDefaultConfig


class BadSignature(Centroid):
    def adapt(self):  # noqa: D102
        return self


def test_an_exception_in_fit_is_one_line_naming_the_step_and_later_checks_are_skipped():
    out = results(FailsInFit)
    assert out["fit"] == ("failed", "fit raised RuntimeError: boom in fit")
    assert out["probabilities"] == ("skipped", "not run: fit failed (fit raised RuntimeError: boom in fit)")
    assert out["declaration"][0] == out["signatures"][0] == out["hyperparameters"][0] == "passed"


def test_wrong_shape_and_logits_fail_probabilities_with_what_to_do():
    assert "returned shape (32, 7); expected (32, 8)" in failed(WrongShape, "probabilities")
    assert "return probabilities (softmax), not logits" in failed(Logits, "probabilities") \
        or "negative probabilities; apply a softmax" in failed(Logits, "probabilities")


def test_state_kept_across_plates_fails():
    assert "adapt() must forget the previous plate" in failed(RemembersPlates, "no_state_across_plates")


def test_a_nondeterministic_method_fails_unless_it_says_so():
    assert "two fits with seed 0 give predictions that differ" in failed(Random, "deterministic")
    Random.deterministic = False
    try:
        assert results(Random)["deterministic"] == ("skipped", "the method declares deterministic = False")
    finally:
        Random.deterministic = True


def test_a_controls_method_that_reads_treated_images_fails_access():
    message = failed(ReadsTreated, "access_level")
    assert "access controls: predictions changed" in message and "replaced by another plate's" in message


def test_a_none_method_that_depends_on_the_predict_batch_fails_access():
    message = failed(BatchNormalised, "access_level")
    assert "with the other images passed to predict()" in message


def test_a_method_reading_target_labels_behind_the_view_fails_label_blind():
    message = failed(PeeksAtLabels, "label_blind")
    assert "changed by up to 1 when its labels were scrambled" in message and "reads target labels" in message


def test_config_without_default_and_bad_signature_fail_statically():
    assert "alpha of NoDefaultConfig have no default" in failed(NeedsAValue, "hyperparameters")
    assert results(NeedsAValue)["fit"][1].startswith("the default config cannot be built")
    assert "adapt(self) does not accept the call adapt(self, plate)" in failed(BadSignature, "signatures")


# -- leakage guards of the API ---------------------------------------------------------------

def test_plate_view_and_image_array_carry_no_labels(toy_dataset):
    ids = toy_dataset.index.filter((pl.col("plate") == "src3_b0_p0") & ~pl.col("is_control"))["image_id"]
    view, _ = toy_dataset.plate_view("src3_b0_p0", ids.to_numpy(), np.random.default_rng(0))
    for name in ("labels", "label", "y", "image_ids", "wells", "index", "dataset"):
        with pytest.raises(AttributeError, match=f"PlateView has no attribute '{name}': a target plate's view "
                                                 "holds only plate .its name., treated and controls"):
            getattr(view, name)
    with pytest.raises(AttributeError, match="ImageArray has no attribute 'labels': it holds pixels only"):
        view.treated.labels  # noqa: B018
    with pytest.raises(AttributeError):
        view.labels = [0]  # slots: nothing can be attached either
    assert not hasattr(view.treated._store, "index") and not hasattr(view.treated._store, "labels")


def test_labelled_images_refuse_target_ids(toy_dataset):
    train = toy_dataset.labelled(toy_dataset.index.filter(pl.col("source") != "src3"))
    target = toy_dataset.index.filter(pl.col("source") == "src3")["image_id"].to_numpy()[:5]
    with pytest.raises(LeakageError, match=r"LabelledImages.labels: 5 image id\(s\) are not part of this set; a "
                                           r"method may only use the ids of its own training/validation set"):
        train.labels(target)
    with pytest.raises(LeakageError, match="LabelledImages.images: 1 image id"):
        train.images(np.array([target[0], train.treated_ids()[0]]))
    with pytest.raises(LeakageError, match="not part of this set"):
        train.labels(np.array([10 ** 9]))
    assert (train.labels(train.treated_ids()) >= 0).all()


def test_the_evaluator_never_hands_a_none_method_the_plate(toy_dataset):
    from benchmark.protocol.evaluation import view_for

    ids = toy_dataset.index.filter((pl.col("plate") == "src3_b0_p0") & ~pl.col("is_control"))["image_id"]
    full, _ = toy_dataset.plate_view("src3_b0_p0", ids.to_numpy(), np.random.default_rng(0))
    cut = view_for(Centroid(), full, toy_dataset)
    assert isinstance(cut, PlateView) and len(cut.treated) == len(cut.controls) == 0
