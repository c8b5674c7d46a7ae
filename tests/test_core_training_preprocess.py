"""Per-channel statistics, crops, flips and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.recipe.bn_policies import RunningStats
from benchmark.core.training.preprocess import Preprocessor, center_crop, channel_stats, check_crop, random_crop_flip
from benchmark.core.recipe.validation import ValidationSet
from benchmark.errors import MethodError
from benchmark.methods.erm import ERM

from _method_data import split


def _images(n=10, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 5, size, size), dtype=np.uint8)


def test_channel_stats_match_numpy_over_chunks():
    x = _images(37)
    stats = channel_stats(x, chunk=8)
    np.testing.assert_allclose(stats.mean, x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats.std, x.std(axis=(0, 2, 3)), rtol=1e-4)


def test_channel_stats_of_uint8_pixels_are_those_of_their_float_values():
    """The histogram path (uint8) and the float64 sums give the same statistics."""
    x = _images(23, size=9, seed=4)
    exact, summed = channel_stats(x, chunk=5), channel_stats(x.astype(np.float32), chunk=7)
    np.testing.assert_array_equal(exact.mean, summed.mean)
    np.testing.assert_allclose(exact.std, summed.std, rtol=1e-6)
    np.testing.assert_allclose(exact.std, x.std(axis=(0, 2, 3)), rtol=1e-5)


def test_normalised_training_images_have_zero_mean_unit_std():
    x = _images(50)
    t = Preprocessor(channel_stats(x), crop=12).eval(x)
    assert t.dtype.is_floating_point and t.shape == (50, 5, 12, 12)
    np.testing.assert_allclose(t.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(t.std(dim=(0, 2, 3)).numpy(), 1, atol=1e-2)


def test_center_crop_and_random_crop_take_windows_of_the_image():
    x = np.arange(2 * 5 * 6 * 6, dtype=np.uint8).reshape(2, 5, 6, 6)
    assert np.array_equal(center_crop(x, 4), x[:, :, 1:5, 1:5])
    out = random_crop_flip(x, 4, np.random.default_rng(0))
    assert out.shape == (2, 5, 4, 4)
    for i in range(2):  # each crop (possibly flipped) is some 4x4 window of its own image
        windows = [x[i, :, a:a + 4, b:b + 4] for a in range(3) for b in range(3)]
        variants = [w for win in windows for w in (win, win[:, :, ::-1], win[:, ::-1], win[:, ::-1, ::-1])]
        assert any(np.array_equal(out[i], v) for v in variants)


def test_crop_larger_than_the_image_is_a_clear_error():
    assert check_crop(0, (5, 64, 64)) == 64
    with pytest.raises(MethodError, match=r"crop 256 px is larger than the images \(64x64 px\); set crop <= 64"):
        check_crop(256, (5, 64, 64))


@pytest.mark.parametrize("channels_last", [False, True])
def test_eval_pixels_stay_uint8_and_normalise_chunkwise_to_exactly_eval(channels_last):
    x = _images(20, size=16)
    prep = Preprocessor(channel_stats(x), crop=10, channels_last=channels_last)
    pixels = prep.eval_pixels(x)
    assert pixels.dtype.is_floating_point is False and pixels.element_size() == 1 and pixels.shape == (20, 5, 10, 10)
    np.testing.assert_array_equal(pixels.numpy(), center_crop(x, 10))
    chunked = np.concatenate([prep.normalise(pixels[i:i + 7]).numpy() for i in range(0, 20, 7)])
    np.testing.assert_array_equal(chunked, prep.eval(x).numpy())
    with pytest.raises(TypeError, match="uint8"):
        prep.normalise(prep.eval(x))  # already normalised: refused, not shifted twice


def test_convnet_validation_set_is_held_as_uint8(toy_dataset):
    train, val, _ = split(toy_dataset)
    method = ERM(ERM.Config(crop=12))
    method._setup(train, seed=0)
    group = ValidationSet.read(val, RunningStats(), method.net).plates[0]
    x, y = group.pixels, group.labels
    assert x.dtype.is_floating_point is False and x.element_size() == 1 and len(x) == len(y) > 0
