"""The plate-grouped and mixed batch samplers."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.training.sampler import (MixedBatches, OnePlateBatches, PlateContext, chunk_indices, mixed_batches,
                                    plate_batches)
from benchmark.errors import DataError


@pytest.fixture(scope="module")
def train(toy_dataset):
    return toy_dataset.labelled(toy_dataset.index)


def test_chunks_cover_everything_without_tiny_last_chunk():
    chunks = chunk_indices(72, 32)
    assert [len(c) for c in chunks] == [24, 24, 24]
    assert np.array_equal(np.concatenate(chunks), np.arange(72))
    assert chunk_indices(0, 32) == []


def test_plate_batches_never_mix_plates_and_append_flagged_controls_of_the_same_plate(train, toy_dataset):
    plate_of = toy_dataset.index["plate"].to_numpy()
    batches = plate_batches(train, 16, np.random.default_rng(0), n_controls=8)
    for b in batches:
        assert set(plate_of[b.image_ids]) == {b.plate}
        labels = train.labels(b.image_ids)
        assert np.array_equal(b.is_context, labels == -1)
        assert b.is_context.sum() == 8 and not b.is_context[:(~b.is_context).sum()].any()  # treated first
        assert len(set(b.image_ids)) == len(b)
    treated = np.concatenate([b.image_ids[~b.is_context] for b in batches])
    assert np.array_equal(np.sort(treated), np.sort(train.treated_ids()))  # every treated image once per epoch
    assert len({b.plate for b in batches[:6]}) > 1  # plates are interleaved


def test_plate_batches_without_controls_hold_treated_images_only(train):
    for b in plate_batches(train, 32, np.random.default_rng(1)):
        assert not b.is_context.any() and (train.labels(b.image_ids) >= 0).all()


def test_samplers_are_deterministic_given_the_generator(train):
    a = plate_batches(train, 16, np.random.default_rng(5), n_controls=4)
    b = plate_batches(train, 16, np.random.default_rng(5), n_controls=4)
    assert all(np.array_equal(x.image_ids, y.image_ids) for x, y in zip(a, b))
    c = plate_batches(train, 16, np.random.default_rng(6), n_controls=4)
    assert not all(np.array_equal(x.image_ids, y.image_ids) for x, y in zip(a, c))


def test_mixed_batches_draw_across_plates(train, toy_dataset):
    plate_of = toy_dataset.index["plate"].to_numpy()
    batches = mixed_batches(train, 32, np.random.default_rng(0))
    ids = np.concatenate([b.image_ids for b in batches])
    assert np.array_equal(np.sort(ids), np.sort(train.treated_ids()))
    assert max(len(set(plate_of[b.image_ids])) for b in batches) > 1


def test_plate_without_controls_is_a_clear_error(toy_dataset):
    index = toy_dataset.index
    rows = index.filter(~index["is_control"] | (index["plate"] != "src0_b0_p0"))
    with pytest.raises(DataError, match="plate src0_b0_p0 has no DMSO images"):
        plate_batches(toy_dataset.labelled(rows), 16, np.random.default_rng(0), n_controls=8)


def test_compositions_draw_the_batches_of_their_sampler(train):
    mixed = MixedBatches(24).batches(train, np.random.default_rng(2))
    assert all(np.array_equal(a.image_ids, b.image_ids)
               for a, b in zip(mixed, mixed_batches(train, 24, np.random.default_rng(2))))
    one_plate = OnePlateBatches(PlateContext(16, n_controls=8)).batches(train, np.random.default_rng(2))
    expected = plate_batches(train, 16, np.random.default_rng(2), n_controls=8)
    assert len(one_plate) == len(expected)
    assert all(np.array_equal(a.image_ids, b.image_ids) for a, b in zip(one_plate, expected))


@pytest.mark.parametrize("context", [PlateContext(16), PlateContext(16, n_controls=8), PlateContext(40, n_controls=64)],
                         ids=repr)
def test_one_plate_batches_never_mix_plates(train, toy_dataset, context):
    plate_of = toy_dataset.index["plate"].to_numpy()
    for seed in range(3):
        for b in OnePlateBatches(context).batches(train, np.random.default_rng(seed)):
            assert set(plate_of[b.image_ids]) == {b.plate}
            assert b.is_context.sum() == min(context.n_controls, len(train.control_ids(b.plate)))
