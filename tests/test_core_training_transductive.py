"""Transductive training batches: a labelled batch of the training plates + unlabelled target-plate images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _method_data import split, view
from benchmark.core.training.loader import batch_targets, epochs, n_domains, read_batch, training_steps
from benchmark.core.training.preprocess import Preprocessor, channel_stats
from benchmark.core.training.sampler import MixedBatches, OnePlateBatches, PlateContext, WithTargetImages, target_draws
from benchmark.datasets.dataset import PlateView
from benchmark.errors import DataError

TARGETS = ("src3_b0_p0", "src3_b1_p1")


@pytest.fixture(scope="module")
def data(toy_dataset):
    train, _, target = split(toy_dataset)
    views = [view(toy_dataset, target, plate)[0] for plate in TARGETS]
    transductive = toy_dataset.labelled(train.table, views)
    pre = Preprocessor(channel_stats(train.read(train.treated_ids()[:64])), 16, "cpu", channels_last=False)
    return transductive, views, pre


def test_every_labelled_batch_gets_unlabelled_target_images_and_keeps_its_own_images(data):
    train, views, _ = data
    plain = MixedBatches(16).batches(train, np.random.default_rng(3))
    composed = WithTargetImages(MixedBatches(16), 8).batches(train, np.random.default_rng(3))
    assert len(plain) == len(composed)
    for a, b in zip(plain, composed):
        assert np.array_equal(a.image_ids, b.image_ids) and np.array_equal(a.is_context, b.is_context)
        assert b.target_rows.shape == (8, 2) and len(b) == len(a) + 8
        assert set(b.target_rows[:, 0]) <= {0, 1}
        assert (b.target_rows[:, 1] < np.array([len(v.treated) for v in views])[b.target_rows[:, 0]]).all()


def test_target_images_are_all_drawn_once_before_any_is_drawn_again():
    views = [PlateView("a", np.zeros((5, 1, 2, 2), np.uint8), np.zeros((0, 1, 2, 2), np.uint8)),
             PlateView("b", np.zeros((3, 1, 2, 2), np.uint8), np.zeros((0, 1, 2, 2), np.uint8))]
    draws = target_draws(views, n_batches=4, n_per_batch=4, rng=np.random.default_rng(0))
    first, second = np.concatenate(draws[:2]), np.concatenate(draws[2:])
    expected = {(0, r) for r in range(5)} | {(1, r) for r in range(3)}
    assert {tuple(p) for p in first} == expected and {tuple(p) for p in second} == expected


def test_steps_carry_target_pixels_without_labels_and_with_target_domains(data):
    train, views, pre = data
    batches = WithTargetImages(OnePlateBatches(PlateContext(12, 4)), 10).batches(train, np.random.default_rng(0))[:5]
    steps = list(training_steps(train, batches, pre, np.random.default_rng(1)))
    n_train = len(train.plates)
    assert n_domains(train) == n_train + len(views)
    for step, batch in zip(steps, batches):
        labelled = len(batch.image_ids)
        y, d = step.targets.numpy(), step.domains.numpy()
        assert (y[labelled:] == -1).all() and (y[:labelled][~batch.is_context] >= 0).all()  # no labels for targets
        assert np.array_equal(d[labelled:], n_train + batch.target_rows[:, 0])
        assert (d[:labelled] < n_train).all()
        pixels = read_batch(train, batch)
        for k, (i, row) in enumerate(batch.target_rows):
            assert np.array_equal(pixels[labelled + k], views[i].treated[row])
        assert len(step.inputs) == len(batch) and np.array_equal(batch_targets(train, batch), y)


def test_worker_loader_gives_the_same_transductive_steps(data):
    train, _, pre = data
    batches = WithTargetImages(MixedBatches(16), 8).batches(train, np.random.default_rng(0))[:3]
    here = list(training_steps(train, batches, pre, np.random.default_rng(1), workers=1))
    there = list(training_steps(train, batches, pre, np.random.default_rng(1), workers=2))
    for a, b in zip(here, there):
        assert torch.equal(a.targets, b.targets) and torch.equal(a.domains, b.domains)
        assert a.inputs.shape == b.inputs.shape


def test_without_target_plates_the_composition_says_to_declare_transductive(toy_dataset):
    train, _, _ = split(toy_dataset)
    epoch = epochs(train, WithTargetImages(MixedBatches(16), 8), None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="transductive"):
        epoch(np.random.default_rng(0))
