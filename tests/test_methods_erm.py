"""ERM: trained on mixed batches, predicts in eval() with running statistics."""

from __future__ import annotations

import numpy as np
import pytest

from _method_data import split, view
from benchmark.errors import MethodError
from benchmark.methods.erm import ERM

FAST = dict(threads=1, crop=0, max_epochs=3, patience=3, lr=3e-3, schedule="constant")


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    return ERM(ERM.Config(**FAST)).fit(train, val, seed=0), target


def test_predictions_are_probabilities_and_the_report_is_complete(fitted, toy_dataset):
    method, target = fitted
    v, labels = view(toy_dataset, target, "src3_b0_p0")
    probs = method.adapt(v).predict(v.treated)
    assert probs.shape == (len(labels), 8)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    report = method.fit_report()
    assert report["selection"] == "min val loss (training-domain val batches)"
    assert {"epochs_run", "best_epoch", "best_val_loss", "train_seconds", "images_per_second"} <= set(report)


def test_prediction_of_an_image_does_not_depend_on_the_other_images(fitted, toy_dataset):
    method, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    x = np.asarray(v.treated)
    method.adapt(v)
    assert not method.model_.training
    np.testing.assert_allclose(method.predict(x[:3]), method.predict(x)[:3], rtol=1e-5, atol=1e-6)
    other, _ = view(toy_dataset, target, "src3_b1_p1")
    np.testing.assert_allclose(method.adapt(other).predict(x[:3]), method.predict(x[:3]), rtol=1e-5, atol=1e-6)


def test_predict_before_fit_says_to_call_fit():
    with pytest.raises(MethodError, match=r"ERM is not fitted yet: call fit\(\)"):
        ERM().predict(np.zeros((1, 5, 16, 16), np.uint8))
