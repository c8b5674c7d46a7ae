"""The sealed fold store: only the fold's training and validation images, the same images in the same order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.datasets.dataset import open_dataset
from benchmark.sealed.foldstore import (FOLD_FILE, ensure_sealed_fold, fold_digest, open_sealed_fold, sealed_path)
from benchmark.splits import make_folds


@pytest.fixture
def fold(toy_dataset):
    return make_folds(toy_dataset.index, "source_out")[1]


def test_the_store_holds_exactly_the_folds_train_and_val_images(toy_dataset, fold, tmp_path):
    store = ensure_sealed_fold(toy_dataset, fold, 0, tmp_path)
    assert store.built and store.root == sealed_path(toy_dataset, fold, 0, tmp_path)
    assert store.root.parts[-3:] == (f"toy-{toy_dataset.fingerprint}", "source_out-seed0",
                                     f"fold1-{fold_digest(fold)}")
    sealed, train_ids, val_ids = open_sealed_fold(store.root)
    assert len(sealed.index) == len(fold.train_ids) + len(fold.val_ids) == store.n_images
    held_out = set(toy_dataset.index[fold.target_ids]["plate"])
    assert not held_out & set(sealed.index["plate"])  # no target plate, no in-domain test well
    for new, old in ((train_ids, fold.train_ids), (val_ids, fold.val_ids)):
        cols = ["source", "batch", "plate", "well", "site", "compound", "label", "is_control"]
        assert sealed.index[new].select(cols).equals(toy_dataset.index[old].select(cols))
        assert np.array_equal(sealed.read(new), toy_dataset.read(old))
    old, new = np.concatenate([fold.train_ids, fold.val_ids]), np.concatenate([train_ids, val_ids])
    assert np.array_equal(new[np.argsort(old)], np.arange(len(old)))  # renumbered 0..N-1, growing with the old ids
    assert store.n_bytes == sum(s.n_bytes for s in sealed.meta.shards)
    assert sealed.meta.settings["sealed_fold"]["fingerprint"] == toy_dataset.fingerprint


def test_labelled_sets_from_the_store_match_the_full_dataset(toy_dataset, fold, tmp_path):
    sealed, train_ids, _ = open_sealed_fold(ensure_sealed_fold(toy_dataset, fold, 0, tmp_path).root)
    full = toy_dataset.labelled(toy_dataset.index[fold.train_ids])
    mine = sealed.labelled(sealed.index[train_ids])
    assert mine.plates == full.plates
    assert mine.table.drop("image_id").equals(full.table.drop("image_id"))
    for plate in full.plates:
        assert np.array_equal(mine.read(mine.treated_ids(plate)), full.read(full.treated_ids(plate)))
        assert np.array_equal(mine.labels(mine.control_ids(plate)), full.labels(full.control_ids(plate)))


def test_a_complete_store_is_reused_and_a_damaged_one_rebuilt(toy_dataset, fold, tmp_path, capsys):
    first = ensure_sealed_fold(toy_dataset, fold, 0, tmp_path)
    again = ensure_sealed_fold(toy_dataset, fold, 0, tmp_path)
    assert again.built is False and again.root == first.root
    assert [p.name for p in first.root.parent.iterdir()] == [first.root.name]  # no temporary folder left
    shard = next((first.root / "shards").iterdir())
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    rebuilt = ensure_sealed_fold(toy_dataset, fold, 0, tmp_path)
    assert rebuilt.built and "incomplete or stale; rebuilding it" in capsys.readouterr().err
    open_dataset(rebuilt.root, verify="full")


def test_other_folds_and_split_seeds_get_their_own_store(toy_dataset, tmp_path):
    folds = make_folds(toy_dataset.index, "source_out")
    roots = {ensure_sealed_fold(toy_dataset, f, 0, tmp_path).root for f in folds[:2]}
    other_seed = make_folds(toy_dataset.index, "batch_out", 1)[0]
    roots.add(ensure_sealed_fold(toy_dataset, other_seed, 1, tmp_path).root)
    assert len(roots) == 3
    roles = json.loads((sorted(roots)[0] / FOLD_FILE).read_text())
    assert {"train", "val", "fingerprint", "digest", "split", "split_seed", "fold"} <= set(roles)


def test_the_digest_changes_with_the_folds_ids(toy_dataset, fold):
    assert fold_digest(fold) != fold_digest(make_folds(toy_dataset.index, "source_out")[2])
    assert fold_digest(fold) == fold_digest(make_folds(toy_dataset.index, "source_out")[1])
