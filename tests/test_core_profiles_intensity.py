"""Per-channel intensity statistics match their definition; DMSO standardisation gives the controls mean 0, std 1."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.constants import CHANNELS
from benchmark.core.profiles.intensity import (
    MIN_STD,
    STATISTICS,
    channel_statistics,
    feature_names,
    standardise_by_controls,
)


def reference(images: np.ndarray) -> np.ndarray:
    """The statistics by their definition, one image and channel at a time, with numpy's own functions."""
    rows = []
    for image in images:
        row = []
        for channel in image:
            v = channel.ravel().astype(np.float64)
            row += [v.mean(), v.std(),
                    *(np.quantile(v, q, method="inverted_cdf") for q in (0.10, 0.50, 0.90, 0.99)),
                    100 * np.count_nonzero(v == 255) / v.size]
        rows.append(row)
    return np.array(rows)


def test_a_hand_made_image_gives_the_numbers_by_hand():
    x = np.zeros((1, 2, 10, 10), dtype=np.uint8)
    x[0, 0] = np.arange(100).reshape(10, 10)  # grey levels 0..99, each once
    x[0, 1, :5] = 255                          # half the pixels saturated, half black
    got = dict(zip(feature_names(["A", "B"]), channel_statistics(x)[0].tolist()))
    assert got["A_mean"] == pytest.approx(49.5)
    assert got["A_std"] == pytest.approx(np.sqrt((100**2 - 1) / 12))
    assert [got[f"A_q{q}"] for q in (10, 50, 90, 99)] == [9, 49, 89, 98]  # smallest v with >= q % of pixels <= v
    assert got["A_saturated_pct"] == 0
    assert (got["B_mean"], got["B_std"], got["B_q50"], got["B_q90"]) == pytest.approx((127.5, 127.5, 0, 255))
    assert got["B_saturated_pct"] == pytest.approx(50)


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 1, 1, 13), (4, 5, 32, 32)])
def test_random_images_match_the_numpy_reference(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    x[0, :, 0, 0] = 255  # at least one saturated pixel
    got = channel_statistics(x)
    assert got.dtype == np.float32 and got.shape == (shape[0], shape[1] * len(STATISTICS))
    np.testing.assert_allclose(got, reference(x), rtol=1e-6, atol=1e-4)


def test_chunks_do_not_change_the_result_and_array_like_views_work(toy_dataset):
    ids = toy_dataset.index["image_id"].to_numpy()[:37]
    lazy = toy_dataset.image_array(ids)  # what a plate view holds: slices into uint8 arrays
    whole = channel_statistics(toy_dataset.read(ids))
    np.testing.assert_array_equal(channel_statistics(lazy, chunk=5), whole)
    np.testing.assert_array_equal(channel_statistics(lazy, chunk=1), whole)
    assert channel_statistics(toy_dataset.read(ids[:0])).shape == (0, len(CHANNELS) * len(STATISTICS))


def test_feature_names_follow_the_columns():
    names = feature_names()
    assert len(names) == len(CHANNELS) * len(STATISTICS) == len(set(names))
    assert names[:2] == ["RNA_mean", "RNA_std"] and names[len(STATISTICS)] == "ER_mean"
    assert names[-1] == "DNA_saturated_pct"


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 5, 4, 4), dtype=np.float32), "expects uint8 images, got float32"),
    (np.zeros((5, 4, 4), dtype=np.uint8), r"expects images of shape \(N, C, H, W\), got \(5, 4, 4\)"),
])
def test_bad_input_says_what_is_expected(images, message):
    with pytest.raises(ValueError, match=message):
        channel_statistics(images)


def test_controls_standardised_by_themselves_have_mean_zero_and_std_one():
    rng = np.random.default_rng(0)
    controls = rng.normal([10, 200, 0.3], [2, 30, 5], size=(40, 3))
    treated = rng.normal([12, 180, 1.0], [2, 30, 5], size=(25, 3))
    z = standardise_by_controls(controls, controls)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, rtol=1e-5)
    np.testing.assert_allclose(standardise_by_controls(treated, controls),
                               (treated - controls.mean(0)) / controls.std(0), rtol=1e-5)


def test_the_std_floor_keeps_a_feature_constant_over_the_controls_finite():
    controls = np.column_stack([np.zeros(10), np.arange(10.0)])  # feature 0: constant 0 on every DMSO image
    z = standardise_by_controls(np.array([[1.0, 4.5]]), controls)
    assert z[0, 0] == pytest.approx(1 / MIN_STD) and z[0, 1] == pytest.approx(0)
    assert standardise_by_controls(np.array([[1.0, 4.5]]), controls, min_std=np.array([2.0, 0.0]))[0, 0] == 0.5


def test_fewer_than_two_controls_is_an_error():
    with pytest.raises(ValueError, match="needs at least 2 control rows"):
        standardise_by_controls(np.ones((3, 2)), np.ones((1, 2)))
