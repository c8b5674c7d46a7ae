"""The validation loss: pooled with running statistics, plate by plate with plate-wise BN sources."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from benchmark.core.recipe.bn_policies import ChunkStats, ControlStats, RunningStats
from benchmark.core.recipe.network import Network
from benchmark.core.training.preprocess import Preprocessor, channel_stats
from benchmark.core.training.sampler import PlateContext
from benchmark.core.recipe.validation import ValidationSet
from benchmark.errors import MethodError


@pytest.fixture(scope="module")
def val(toy_dataset):
    return toy_dataset.labelled(toy_dataset.index.filter(pl.col("batch") == "src0_b2"))


def _net(val) -> Network:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(5, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 8)).eval()
    return Network(model, Preprocessor(channel_stats(val.read(val.treated_ids())), 12, "cpu"), 64, "toy")


def test_running_statistics_pool_all_validation_images(val):
    net = _net(val)
    validation = ValidationSet.read(val, RunningStats(), net)
    (group,) = validation.plates
    ids = val.treated_ids()
    assert group.pixels.dtype == torch.uint8 and len(group.pixels) == len(ids) and group.controls is None
    expected = F.cross_entropy(net.eval_logits(net.pixels(val.read(ids))), torch.as_tensor(val.labels(ids)))
    assert validation.loss(net) == expected.item()


def test_plate_wise_sources_predict_every_plate_with_its_own_context(val):
    net = _net(val)
    source = ChunkStats(PlateContext(8, n_controls=4))
    validation = ValidationSet.read(val, source, net, seed=0)
    assert [g.plate for g in validation.plates] == val.plates
    total, n = 0.0, 0
    for plate in val.plates:
        group = next(g for g in validation.plates if g.plate == plate)
        torch.testing.assert_close(group.controls, net.tensor(val.read(val.control_ids(plate))))
        state = source.prepare(net, plate, group.pixels, group.controls)
        total += F.cross_entropy(state.logits(net, group.pixels), group.labels, reduction="sum")
        n += len(group.labels)
    assert validation.loss(net) == pytest.approx((total / n).item(), rel=1e-6)


def _storage_positions(pixels: torch.Tensor, stored: torch.Tensor) -> list[int]:
    """Where each row of ``pixels`` sits among ``stored`` (the plate's images in storage order)."""
    position = {x.numpy().tobytes(): i for i, x in enumerate(stored)}
    return [position[x.numpy().tobytes()] for x in pixels]


def test_plate_wise_validation_shuffles_each_plate_once_seeded_by_run_and_plate(val):
    """Chunks of a plate in storage (well) order would be BN contexts of a few adjacent wells."""
    net = _net(val)
    orders = {}
    for seed in (0, 1):
        for group in ValidationSet.read(val, ChunkStats(PlateContext(8)), net, seed=seed).plates:
            ids = val.treated_ids(group.plate)
            order = _storage_positions(group.pixels, net.pixels(val.read(ids)))
            assert sorted(order) == list(range(len(ids))) and order != sorted(order)  # each image once, shuffled
            np.testing.assert_array_equal(group.labels.numpy(), val.labels(ids)[order])  # labels follow
            orders[seed, group.plate] = order
    again = ValidationSet.read(val, ChunkStats(PlateContext(8)), net, seed=0).plates
    assert all(_storage_positions(g.pixels, net.pixels(val.read(val.treated_ids(g.plate)))) == orders[0, g.plate]
               for g in again)  # bit-reproducible
    first, second = val.plates
    assert orders[0, first] != orders[1, first] and orders[0, first] != orders[0, second]


def test_pooled_validation_keeps_storage_order(val):
    """Running statistics predict each image on its own: nothing to shuffle, and ERM's numbers stay as they were."""
    net = _net(val)
    (group,) = ValidationSet.read(val, RunningStats(), net, seed=3).plates
    torch.testing.assert_close(group.pixels, net.pixels(val.read(val.treated_ids())))


def test_validation_reads_no_controls_unless_the_source_uses_them(val):
    net = _net(val)
    assert all(g.controls is None for g in ValidationSet.read(val, ChunkStats(PlateContext(8)), net).plates)
    assert all(g.controls is not None for g in ValidationSet.read(val, ControlStats(), net).plates)


def test_empty_validation_gives_zero(val, toy_dataset):
    net = _net(val)
    empty = toy_dataset.labelled(toy_dataset.index.clear())
    assert ValidationSet.read(empty, ControlStats(), net).loss(net) == 0.0


def test_a_validation_plate_without_dmso_is_a_clear_error(val, toy_dataset):
    rows = toy_dataset.index.filter((pl.col("batch") == "src0_b2") & ~pl.col("is_control"))
    with pytest.raises(MethodError, match="has no DMSO images; toy needs the plate's controls"):
        ValidationSet.read(toy_dataset.labelled(rows), ControlStats(), _net(val))
    assert np.isfinite(ValidationSet.read(toy_dataset.labelled(rows), RunningStats(), _net(val)).loss(_net(val)))
