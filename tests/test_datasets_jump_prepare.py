"""End to end: prepare a local mirror of cpg0016 into a dataset the benchmark can split and read."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import tifffile

from _jump_mirror import LIBRARY_ID, build_mirror
from benchmark.constants import CHANNELS, DMSO_ID, DMSO_LABEL, POSCONS
from benchmark.datasets import load_dataset
from benchmark.datasets.dataset import open_dataset
from benchmark.datasets.jump import PrepareOptions, load_jump, prepare_jump
from benchmark.datasets.jump.manifest import MANIFEST_FILE
from benchmark.datasets.jump.preprocess import preprocess_channel
from benchmark.splits import make_folds

MISSING_PLATE = "source_3_CP_59_all_Phenix1_1053601756"
TRUNCATED_PLATE = "source_8_J1_Batch_1_110000295851"  # also the FileName/PathName load-data form
DEVIATING_PLATE = "source_8_J1_Batch_2_A1170401"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("jump")
    mirror = build_mirror(base)
    missing = mirror.plate(MISSING_PLATE).image_keys[("B01", 1, "ER")]
    mirror.path(missing).unlink()
    truncated = mirror.plate(TRUNCATED_PLATE).image_keys[("A02", 2, "DNA")]
    data = mirror.path(truncated).read_bytes()
    mirror.path(truncated).write_bytes(data[: len(data) // 2])
    options = PrepareOptions(root=str(mirror.root), metadata=mirror.metadata, out=base / "out", min_sites=4,
                             crop=32, workers=4, backoff_s=0.0)
    report = prepare_jump(options)
    return mirror, report, options, {"missing": missing, "truncated": truncated}


def test_plates_and_ids(prepared):
    mirror, report, options, _ = prepared
    ds = open_dataset(options.out_dir, verify="full")
    plates = sorted(ds.index["plate"].unique().to_list())
    # the reference batch CP_33_all_Phenix1 and the ORF plate are left out; numeric ids kept as strings
    assert plates == sorted(p.plate_id for p in mirror.plates if p.batch != "CP_33_all_Phenix1")
    assert "source_3_CP_59_all_Phenix1_0053601757" in plates
    assert sorted(ds.index["source"].unique().to_list()) == ["source_3", "source_8"]
    assert sorted(ds.index["batch"].unique().to_list()) == ["CP_59_all_Phenix1", "CP_60_all_Phenix1",
                                                             "J1_Batch_1", "J1_Batch_2"]
    assert ds.image_shape == (5, 32, 32)
    assert ds.meta.settings["min_sites"] == 4
    assert ds.meta.settings["microscopes"]["source_8"] == "ImageXpress Micro Confocal"


def test_labels_only_poscons_and_dmso(prepared):
    _, _, options, _ = prepared
    index = open_dataset(options.out_dir).index
    assert LIBRARY_ID not in index["compound"].to_list()
    assert set(index["compound"].unique().to_list()) == {p[2] for p in POSCONS} | {DMSO_ID}
    dmso = index.filter(pl.col("compound") == DMSO_ID)
    assert (dmso["label"] == DMSO_LABEL).all() and dmso["is_control"].all()
    for cls, _, jcp, _, _ in POSCONS:
        rows = index.filter(pl.col("compound") == jcp)
        assert (rows["label"] == cls).all() and not rows["is_control"].any()


def test_reference_filter_drops_deviating_wells(prepared):
    _, _, options, _ = prepared
    index = open_dataset(options.out_dir).index
    dev = index.filter(pl.col("plate") == DEVIATING_PLATE)
    assert dev.filter(pl.col("well").is_in(["B03", "F03"])).is_empty()  # AMG900 at unusual wells: dropped
    assert dev.filter(pl.col("label") == 0).is_empty()
    assert dev.filter(pl.col("label") == 5).is_empty()  # quinidine absent from this plate
    assert len(dev.filter(pl.col("is_control"))) == 32 * 2
    full = index.filter(pl.col("plate") == "source_8_J1_Batch_2_A1170400")
    assert len(full) == 64 * 2


def test_missing_and_truncated_tiffs_are_skipped_with_a_record(prepared, capsys):
    _, report, options, keys = prepared
    assert report.skipped_sites[MISSING_PLATE] == 1
    assert report.skipped_sites[TRUNCATED_PLATE] == 1
    assert sum(report.skipped_sites.values()) == 2
    manifest = json.loads((options.out_dir / MANIFEST_FILE).read_text())
    records = {p["plate_id"]: p["skipped"] for p in manifest["plates"]}
    (miss,) = records[MISSING_PLATE]
    assert miss["key"] == keys["missing"] and miss["well"] == "B01" and miss["site"] == 1
    assert "missing" in miss["reason"]
    (trunc,) = records[TRUNCATED_PLATE]
    assert trunc["key"] == keys["truncated"] and "unreadable TIFF" in trunc["reason"]
    index = open_dataset(options.out_dir).index
    assert index.filter((pl.col("plate") == MISSING_PLATE) & (pl.col("well") == "B01")
                        & (pl.col("site") == 1)).is_empty()


def test_pixels_follow_the_reference_preprocessing_and_channel_order(prepared):
    mirror, _, options, _ = prepared
    ds = open_dataset(options.out_dir)
    plate = mirror.plate("source_3_CP_60_all_Phenix1_1053601800")  # Phenix: 104 px -> 52 -> crop 32
    row = ds.index.filter((pl.col("plate") == plate.plate_id) & (pl.col("well") == "C01") & (pl.col("site") == 2))
    image = ds.read(row["image_id"].to_numpy())[0]
    for c, ch in enumerate(CHANNELS):
        raw = tifffile.imread(mirror.path(plate.image_keys[("C01", 2, ch)]))
        np.testing.assert_array_equal(image[c], preprocess_channel(raw, 32))
    assert image.dtype == np.uint8 and image.max() == 255


def test_dataset_supports_the_splits_and_the_loader(prepared):
    _, _, options, _ = prepared
    ds = load_jump(options.out_dir)
    folds = make_folds(ds.index, "source_out")
    assert [f.held_out for f in folds] == [("source_3",), ("source_8",)]
    for fold in folds:
        assert len(fold.train_ids) and len(fold.val_ids) and len(fold.in_domain_ids) and len(fold.target_ids)
    assert load_dataset("jump", root=options.out_dir).fingerprint == ds.fingerprint


def test_rerun_skips_finished_plates(prepared):
    _, first, options, _ = prepared
    again = prepare_jump(options)
    assert again.prepared == [] and len(again.resumed) == 8
    assert again.meta.fingerprint == first.meta.fingerprint


def test_loader_without_preparation_says_what_to_run(tmp_path):
    from benchmark.errors import DataError

    with pytest.raises(DataError, match=r"not prepared in .*bench data prepare jump --out"):
        load_jump(tmp_path / "nothing")
