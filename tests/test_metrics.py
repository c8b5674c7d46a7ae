"""Metrics on hand-computed cases."""

import numpy as np
import pytest

from benchmark.metrics import (accuracy, balanced_accuracy, bootstrap_ci, classification_metrics,
                               expected_calibration_error, macro_f1, mean_std, per_plate_accuracy)


def onehot_probs(pred, conf, n=8):
    """Rows with probability ``conf`` on ``pred`` and the rest spread evenly."""
    p = np.full((len(pred), n), 0.0)
    for i, (k, c) in enumerate(zip(pred, conf)):
        p[i] = (1 - c) / (n - 1)
        p[i, k] = c
    return p


def test_accuracy_balanced_and_macro_f1_by_hand():
    y = np.array([0, 0, 0, 1])
    p = np.array([0, 0, 1, 1])
    assert accuracy(y, p) == 0.75
    assert balanced_accuracy(y, p) == pytest.approx((2 / 3 + 1) / 2)
    # class 0: precision 1, recall 2/3 -> F1 0.8; class 1: precision 1/2, recall 1 -> F1 2/3
    assert macro_f1(y, p) == pytest.approx((0.8 + 2 / 3) / 2)
    assert np.isnan(accuracy(np.array([]), np.array([])))


def test_ece_perfect_confidence_is_zero():
    probs = onehot_probs([0, 1, 2], [1.0, 1.0, 1.0])
    assert expected_calibration_error(probs, np.array([0, 1, 2])) == 0.0


def test_ece_two_bins_by_hand():
    # 0.8 (correct) falls in bin (0.733, 0.8], 0.7 (wrong) in (0.667, 0.733]
    probs = onehot_probs([0, 0], [0.8, 0.7])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.5 * 0.2 + 0.5 * 0.7)


def test_ece_same_bin_averages_before_the_difference():
    # both in the top bin (0.933, 1]: accuracy 1/2, mean confidence 0.96 -> |0.5 - 0.96|
    probs = onehot_probs([3, 3], [0.95, 0.97])
    assert expected_calibration_error(probs, np.array([3, 4])) == pytest.approx(0.46)


def test_ece_bin_edges_are_right_closed():
    # 0.6 = 9/15 belongs to bin (8/15, 9/15]; 0.61 to the next bin: two bins, each |1 - conf| / 2
    probs = onehot_probs([0, 0], [0.6, 0.61])
    assert expected_calibration_error(probs, np.array([0, 0])) == pytest.approx(0.5 * 0.4 + 0.5 * 0.39)
    assert expected_calibration_error(probs, np.array([0, 0]), n_bins=1) == pytest.approx(1 - 0.605)


def test_per_plate_and_worst_plate():
    y = np.array([0, 1, 2, 3, 0, 1])
    plates = ["a", "a", "b", "b", "c", "c"]
    probs = onehot_probs([0, 1, 2, 0, 1, 0], [0.9] * 6)
    assert per_plate_accuracy(y, probs.argmax(1), plates) == {"a": 1.0, "b": 0.5, "c": 0.0}
    m = classification_metrics(y, probs, plates)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["worst_plate"] == "c" and m["worst_plate_accuracy"] == 0.0
    assert m["mean_plate_accuracy"] == pytest.approx(0.5)
    assert m["n_images"] == 6 and m["n_plates"] == 3
    assert m["ece"] == pytest.approx(0.4)  # all in one bin: |0.5 - 0.9|


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(1).normal(0.8, 0.05, size=20)
    lo, hi = bootstrap_ci(x, seed=3)
    assert (lo, hi) == bootstrap_ci(x, seed=3)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(20), rel=0.25)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(np.isnan(bootstrap_ci([])))


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
    assert mean_std([0.5]) == (0.5, 0.0)
