"""Cutting target plates to two classes: what stays, and that the choice is seeded by plate name alone."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from benchmark.errors import BenchError
from benchmark.calibration.label_shift_cut import choose_classes, cut_plates
from benchmark.splits import make_folds


def _rows(dataset, ids):
    return dataset.index[np.asarray(ids, dtype=np.int64)]


def test_each_cut_plate_holds_two_classes_and_all_its_dmso(toy_dataset):
    fold = make_folds(toy_dataset.index, "source_out")[0]
    ids, classes = cut_plates(toy_dataset.index, fold.target_ids, n_classes=2, seed=0)
    kept, target = _rows(toy_dataset, ids), _rows(toy_dataset, fold.target_ids)
    assert sorted(classes) == sorted(target["plate"].unique().to_list())
    for plate, chosen in classes.items():
        on_plate = kept.filter(pl.col("plate") == plate)
        treated = on_plate.filter(~pl.col("is_control"))
        assert sorted(treated["label"].unique().to_list()) == chosen and len(chosen) == 2
        # every treated image of the two classes stays, and every DMSO image of the plate
        full = target.filter((pl.col("plate") == plate) & ~pl.col("is_control") & pl.col("label").is_in(chosen))
        assert sorted(treated["image_id"].to_list()) == sorted(full["image_id"].to_list())
        dmso = target.filter((pl.col("plate") == plate) & pl.col("is_control"))["image_id"].to_list()
        assert sorted(on_plate.filter(pl.col("is_control"))["image_id"].to_list()) == sorted(dmso) and dmso
    assert (np.diff(ids) > 0).all()


def test_the_classes_depend_on_the_plate_name_and_seed_only(toy_dataset):
    folds = make_folds(toy_dataset.index, "source_out")
    _, first = cut_plates(toy_dataset.index, folds[0].target_ids, seed=0)
    _, again = cut_plates(toy_dataset.index, folds[0].target_ids, seed=0)
    assert first == again  # identical for every method and every run
    one_plate = sorted(first)[0]
    plate_ids = toy_dataset.index.filter(pl.col("plate") == one_plate)["image_id"].to_numpy()
    assert cut_plates(toy_dataset.index, plate_ids, seed=0)[1] == {one_plate: first[one_plate]}
    all_ids = np.concatenate([f.target_ids for f in folds])
    _, every = cut_plates(toy_dataset.index, all_ids, seed=0)
    assert len({tuple(c) for c in every.values()}) > 1  # plates do not all keep the same pair
    _, other_seed = cut_plates(toy_dataset.index, all_ids, seed=1)
    assert other_seed != every


def test_choose_classes_is_sorted_distinct_and_refuses_too_many():
    picked = choose_classes("plate_A", [3, 1, 1, 5, 7], n_classes=2, seed=0)
    assert picked == sorted(set(picked)) and len(picked) == 2 and set(picked) <= {1, 3, 5, 7}
    assert choose_classes("plate_A", [7, 5, 3, 1], 2, 0) == picked  # the order of the labels does not matter
    with pytest.raises(BenchError, match=r"plate plate_A has treated images of 1 class\(es\); cannot keep 2"):
        choose_classes("plate_A", [4, 4], n_classes=2)
