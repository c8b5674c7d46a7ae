"""FM + TVN: frozen encoder, per-plate TVN from the plate's own DMSO, linear classifier."""

from __future__ import annotations

import numpy as np
import pytest

from _method_data import RANDOM_FEATURES, split, view
from benchmark.errors import MethodError
from benchmark.methods.fm_tvn import FMTVN


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    return FMTVN(FMTVN.Config(encoder=RANDOM_FEATURES)).fit(train, val, seed=0), target


def test_fit_report_names_the_encoder_and_predictions_are_probabilities(fitted, toy_dataset):
    method, target = fitted
    assert method.fit_report()["encoder"] == RANDOM_FEATURES
    v, labels = view(toy_dataset, target, "src3_b0_p0")
    probs = method.adapt(v).predict(v.treated)
    assert probs.shape == (len(labels), 8)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    assert (probs.argmax(1) == labels).mean() > 0.5


def test_target_plate_transform_uses_only_its_own_dmso(fitted, toy_dataset):
    method, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    x = np.asarray(v.treated)
    base = method.adapt(v).predict(x)
    np.testing.assert_allclose(method.predict(x[:4]), base[:4], rtol=1e-4, atol=1e-8)  # images do not interact
    other, _ = view(toy_dataset, target, "src3_b1_p1")
    assert not np.allclose(method.adapt(other).predict(x), base)  # another plate's DMSO: another transform


def test_missing_dmso_names_the_plate(fitted, toy_dataset):
    method, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0", with_controls=False)
    with pytest.raises(MethodError, match="plate src3_b0_p0 has 0 DMSO images; fm_tvn needs the plate's DMSO"):
        method.adapt(v)


def test_a_second_fit_in_the_same_fold_reads_every_embedding_from_the_cache(toy_dataset, tmp_path):
    from benchmark.core.training.model_cache import FoldIdentity, fold_scope

    train, val, target = split(toy_dataset)
    fold = FoldIdentity("toy", "f", "source_out", 0, 0, "d", str(tmp_path))
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    runs = []
    for seed in (0, 1):
        with fold_scope(fold):
            method = FMTVN(FMTVN.Config(encoder=RANDOM_FEATURES)).fit(train, val, seed=seed)
        probs = method.adapt(v).predict(v.treated)
        runs.append((method.fit_report()["embedding_cache"], probs))
    (cold, probs0), (warm, probs1) = runs
    assert cold["folder"] == "fold models folder" and cold["files_written"] > 0 and cold["files_read"] == 0
    assert warm["images_embedded"] == 0 and warm["files_read"] > 0  # nothing embedded again, target plate included
    np.testing.assert_array_equal(probs0, probs1)
