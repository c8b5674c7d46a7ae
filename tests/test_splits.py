"""Splits never leak: no plate, batch or source of a fold's target in its train or validation part."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from benchmark.errors import UnknownNameError
from benchmark.splits import make_folds


def _col(index: pl.DataFrame, ids: np.ndarray, col: str) -> set:
    return set(index[col].gather(ids).to_list()) if len(ids) else set()


@pytest.mark.parametrize("split", ["source_out", "batch_out"])
def test_parts_are_disjoint_and_target_never_seen(toy_dataset, split):
    index = toy_dataset.index
    folds = make_folds(index, split)
    assert len(folds) == (4 if split == "source_out" else 5)
    for fold in folds:
        parts = [fold.train_ids, fold.val_ids, fold.in_domain_ids, fold.target_ids]
        assert sum(map(len, parts)) == len(index)
        assert len(np.unique(np.concatenate(parts))) == len(index)
        level = "source" if split == "source_out" else "batch"
        held = set(fold.held_out)
        assert _col(index, fold.target_ids, level) == held
        for part in (fold.train_ids, fold.val_ids, fold.in_domain_ids):
            assert not _col(index, part, level) & held
            assert not _col(index, part, "plate") & _col(index, fold.target_ids, "plate")
            assert not _col(index, part, "batch") & _col(index, fold.target_ids, "batch")
        # validation is whole training-domain batches, never training batches
        assert not _col(index, fold.val_ids, "batch") & _col(index, fold.train_ids, "batch")
        # in-domain wells come from training plates, are treated, and are never trained on
        assert _col(index, fold.in_domain_ids, "plate") <= _col(index, fold.train_ids, "plate")
        assert not index["is_control"].gather(fold.in_domain_ids).any()
        train_wells = set(zip(index["plate"].gather(fold.train_ids), index["well"].gather(fold.train_ids)))
        held_wells = set(zip(index["plate"].gather(fold.in_domain_ids), index["well"].gather(fold.in_domain_ids)))
        assert not train_wells & held_wells
        assert set(index["label"].gather(fold.in_domain_ids).to_list()) == set(range(8))
        # every target plate has DMSO images
        target = index[fold.target_ids]
        assert target.group_by("plate").agg(pl.col("is_control").sum())["is_control"].min() > 0


def test_batch_out_keeps_every_source_in_training(toy_dataset):
    index = toy_dataset.index
    for fold in make_folds(index, "batch_out"):
        assert _col(index, fold.train_ids, "source") == set(index["source"].unique())


def test_source_out_holds_out_each_source_once(toy_dataset):
    folds = make_folds(toy_dataset.index, "source_out")
    assert sorted(f.held_out[0] for f in folds) == sorted(toy_dataset.index["source"].unique())


def test_batch_out_holds_out_each_batch_once(toy_dataset):
    held = [b for f in make_folds(toy_dataset.index, "batch_out") for b in f.held_out]
    assert sorted(held) == sorted(toy_dataset.index["batch"].unique())


@pytest.mark.parametrize("split", ["source_out", "batch_out"])
def test_folds_are_deterministic_and_depend_on_split_seed(toy_dataset, split):
    a, b = make_folds(toy_dataset.index, split, 0), make_folds(toy_dataset.index, split, 0)
    c = make_folds(toy_dataset.index, split, 1)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.train_ids, fb.train_ids)
        np.testing.assert_array_equal(fa.in_domain_ids, fb.in_domain_ids)
    assert any(not np.array_equal(fa.in_domain_ids, fc.in_domain_ids) for fa, fc in zip(a, c))


def test_unknown_split_lists_valid_ones(toy_dataset):
    with pytest.raises(UnknownNameError, match="Valid splits: batch_out, source_out. Did you mean 'source_out'"):
        make_folds(toy_dataset.index, "sourceout")
