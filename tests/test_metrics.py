"""Metrics on hand-computed cases."""

import numpy as np
import pytest
import scipy.stats

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


FOLD_MEANS = [0.738, 0.604, 0.835, 0.696]  # ERM leave-source-out per held-out lab, committed sim-1.5 records


def seeds_around(means, n_seeds=3, spread=0.001):
    """{fold: n_seeds values within ``spread`` of the fold's mean}: seeds agree, folds may not."""
    return {f: list(m + np.linspace(-spread, spread, n_seeds)) for f, m in enumerate(means)}


def run_level_ci(by_fold):
    """The old interval: a percentile bootstrap of the runs as if they were independent."""
    runs = [v for values in by_fold.values() for v in values]
    return scipy.stats.bootstrap((runs,), np.mean, method="percentile", rng=0).confidence_interval


def test_bootstrap_ci_resamples_folds_not_runs():
    by_fold = seeds_around([0.5, 0.9])  # 2 folds x 3 seeds: seeds nearly identical, folds far apart
    lo, hi = bootstrap_ci(by_fold)
    assert lo == pytest.approx(0.5, abs=0.002) and hi == pytest.approx(0.9, abs=0.002)
    old = run_level_ci(by_fold)  # treats the 6 runs as independent: about [0.57, 0.83]
    assert hi - lo > 1.4 * (old.high - old.low)


def test_bootstrap_ci_of_k_folds_has_the_width_of_k_observations():
    expected = scipy.stats.bootstrap((FOLD_MEANS,), np.mean, method="percentile", rng=0).confidence_interval
    for n_seeds in (1, 3, 30):  # more seeds of the same folds do not narrow the interval
        lo, hi = bootstrap_ci(seeds_around(FOLD_MEANS, n_seeds))
        assert lo == pytest.approx(expected.low, abs=0.005) and hi == pytest.approx(expected.high, abs=0.005)
    lo, hi = bootstrap_ci(seeds_around(FOLD_MEANS, 3))
    assert hi - lo > 0.15  # about [0.637, 0.800]; the run-level bootstrap of the 12 runs gives about 0.09


def test_bootstrap_ci_adds_the_seeds_spread_within_folds():
    tight = bootstrap_ci(seeds_around([0.7, 0.7, 0.7], spread=0.001))
    noisy = bootstrap_ci(seeds_around([0.7, 0.7, 0.7], spread=0.05))  # stage 2 resamples the seeds of each fold
    assert tight[1] - tight[0] < 0.002 < 0.02 < noisy[1] - noisy[0]


def test_bootstrap_ci_is_narrow_where_folds_agree():
    lo, hi = bootstrap_ci(seeds_around([0.80, 0.801, 0.799, 0.800, 0.802], spread=0.002))
    assert lo < 0.8004 < hi and hi - lo < 0.004


def test_bootstrap_ci_is_seeded_and_reproducible():
    by_fold = {0: [0.61, 0.64, 0.60], 1: [0.72, 0.70], 2: [0.81, 0.83, 0.80]}  # folds of unequal size
    assert bootstrap_ci(by_fold, seed=3) == bootstrap_ci(dict(by_fold), seed=3)
    assert bootstrap_ci(by_fold, seed=3) != bootstrap_ci(by_fold, seed=4)
    lo, hi = bootstrap_ci(by_fold)
    assert lo < np.mean([v for vs in by_fold.values() for v in vs]) < hi


def test_bootstrap_ci_gives_no_interval_for_a_single_fold():
    assert all(np.isnan(bootstrap_ci({0: [0.6, 0.7, 0.8]})))  # three seeds of one fold are still one fold
    assert all(np.isnan(bootstrap_ci({0: [0.7], 1: []})))
    assert all(np.isnan(bootstrap_ci({})))
    with pytest.raises(TypeError, match=r"group the runs by fold"):
        bootstrap_ci([0.6, 0.7, 0.8])


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
    assert mean_std([0.5]) == (0.5, 0.0)
