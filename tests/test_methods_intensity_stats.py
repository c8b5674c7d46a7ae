"""intensity_stats: per-channel intensity statistics, standardised by the plate's own DMSO, logistic regression."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from _method_data import shifted, split, view
from benchmark.cli import app
from benchmark.core.profiles.intensity import channel_statistics, standardise_by_controls
from benchmark.datasets.dataset import PlateView
from benchmark.errors import MethodError
from benchmark.methods.intensity_stats import IntensityStats
from benchmark.records import load_records

GAIN, OFFSET = [0.8] * 5, [30, -20, 25, 10, -15]


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    return IntensityStats().fit(train, val, seed=0), target


def test_predict_returns_probabilities_of_the_eight_classes(fitted, toy_dataset):
    method, target = fitted
    v, labels = view(toy_dataset, target, "src3_b0_p0")
    probs = method.adapt(v).predict(v.treated[:])
    assert probs.shape == (len(labels), 8) and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-9)
    report = method.fit_report()
    assert report["epochs_run"] is None and len(report["features"]) == 35 and report["train_seconds"] < 60


def test_a_treated_image_is_classified_from_itself_and_the_plates_dmso_only(fitted, toy_dataset):
    method, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    x = np.asarray(v.treated[:])
    base = method.adapt(v).predict(x)
    np.testing.assert_allclose(method.predict(x[:5]), base[:5], rtol=1e-12)  # images do not interact
    expected = method._probabilities(standardise_by_controls(channel_statistics(x), channel_statistics(v.controls)))
    np.testing.assert_allclose(base, expected, rtol=1e-12)
    other, _ = view(toy_dataset, target, "src3_b1_p1")
    assert not np.allclose(method.adapt(other).predict(x), base)  # another plate's DMSO: another standardisation


def test_the_dmso_standardisation_undoes_a_per_channel_gain_and_offset_of_the_plate(fitted, toy_dataset):
    method, target = fitted
    v, _ = view(toy_dataset, target, "src3_b1_p0")
    moved = PlateView(v.plate, shifted(v.treated, GAIN, OFFSET), shifted(v.controls, GAIN, OFFSET))
    base = method.adapt(v).predict(v.treated[:])
    after = method.adapt(moved).predict(moved.treated)
    unadapted = method.adapt(v).predict(moved.treated)  # shifted images, standardised with the unshifted DMSO
    assert (after.argmax(1) == base.argmax(1)).mean() >= 0.8
    assert np.abs(unadapted - base).mean() > 2 * np.abs(after - base).mean()


@pytest.mark.parametrize("n_controls", [0, 1])
def test_a_plate_with_fewer_than_two_dmso_images_is_a_clear_error(fitted, toy_dataset, n_controls):
    method, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    few = PlateView(v.plate, v.treated, v.controls[:n_controls])
    with pytest.raises(MethodError, match=f"plate src3_b0_p0 has {n_controls} DMSO images; intensity_stats "
                                          "needs at least 2"):
        method.adapt(few)
    with pytest.raises(MethodError, match="no target plate: call adapt"):  # the previous plate is forgotten
        method.predict(v.treated[:])


def test_predict_before_fit_says_to_fit():
    with pytest.raises(MethodError, match="not fitted yet"):
        IntensityStats().predict(np.zeros((1, 5, 4, 4), dtype=np.uint8))


def test_bench_run_quick_end_to_end_in_the_sealed_worker(toy_dataset, tmp_path):
    """The sealed worker holds only the fold's training and validation labels: a passing run uses no target label.
    (The session's cache: its zygote, started by an earlier test, serves this run too.)"""
    result = CliRunner().invoke(app, ["run", "-m", "intensity_stats", "-s", "source_out", "--quick", "-q",
                                      "--dataset", str(toy_dataset.root), "--results", str(tmp_path / "res"),
                                      "--device", "cpu", "--folds", "0"])
    assert result.exit_code == 0, result.output
    found = load_records(tmp_path / "res")
    (record,) = found.quick
    assert not found.failed and record.data["method"]["name"] == "intensity_stats"
    assert record.data["method"]["config"] == IntensityStats.Config().to_dict()
