"""The packed store and the dataset model: round trips, atomicity, corruption detection, views."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from benchmark.datasets.dataset import PlateView, open_dataset
from benchmark.datasets.store import ImageArray, write_shard
from benchmark.errors import CorruptCacheError, DataError

from conftest import make_toy_dataset


def test_shard_round_trip_and_gather(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(10, 5, 8, 8), dtype=np.uint8)
    info = write_shard(tmp_path, "plate with space/and slash", images)
    assert info.n_images == 10 and "/" not in info.file.split("shards/")[1]
    assert not list(tmp_path.rglob("*.tmp-*"))
    from benchmark.datasets.store import PackedStore

    store = PackedStore(tmp_path, [info])
    got = store.read(np.zeros(4, dtype=int), np.array([7, 2, 2, 0]))
    np.testing.assert_array_equal(got, images[[7, 2, 2, 0]])


def test_dataset_reads_the_pixels_of_each_row(toy_dataset):
    idx = toy_dataset.index
    ids = np.array([0, len(idx) - 1, 200])
    images = toy_dataset.read(ids)
    assert images.shape == (3, 5, 16, 16) and images.dtype == np.uint8
    for i, image_id in enumerate(ids):
        row = idx.row(int(image_id), named=True)
        shard = np.load(toy_dataset.root / toy_dataset.meta.shards[row["shard"]].file)
        np.testing.assert_array_equal(images[i], shard[row["offset"]])


def test_fingerprint_is_stable_and_changes_with_content(tmp_path):
    a = make_toy_dataset(tmp_path / "a", seed=1)
    b = make_toy_dataset(tmp_path / "b", seed=1)
    c = make_toy_dataset(tmp_path / "c", seed=2)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert (tmp_path / "a" / "index.parquet").read_bytes() == (tmp_path / "b" / "index.parquet").read_bytes()


def test_truncated_shard_is_detected(tmp_path):
    ds = make_toy_dataset(tmp_path, n_sources=2, n_batches=2, n_plates=1)
    shard = tmp_path / ds.meta.shards[1].file
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptCacheError, match="truncated"):
        open_dataset(tmp_path)


def test_altered_shard_is_detected_by_full_verification(tmp_path):
    ds = make_toy_dataset(tmp_path, n_sources=2, n_batches=2, n_plates=1)
    shard = tmp_path / ds.meta.shards[0].file
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    open_dataset(tmp_path, verify="size")  # same size: only the checksum can tell
    with pytest.raises(CorruptCacheError, match="SHA-256"):
        open_dataset(tmp_path, verify="full")


def test_missing_metadata_says_how_to_create_it(tmp_path):
    with pytest.raises(DataError, match="bench data synth"):
        open_dataset(tmp_path)


def test_plate_view_carries_no_labels_and_shuffles(toy_dataset):
    plate = toy_dataset.index["plate"][0]
    treated = toy_dataset.index.filter((pl.col("plate") == plate) & ~pl.col("is_control"))["image_id"].to_numpy()
    view, order = toy_dataset.plate_view(plate, treated, np.random.default_rng(0))
    assert isinstance(view, PlateView) and isinstance(view.treated, ImageArray)
    assert not hasattr(view, "__dict__")  # slots only: plate, treated, controls
    with pytest.raises(AttributeError):
        view.labels = [1]  # type: ignore[attr-defined]
    assert sorted(order) == list(range(len(treated))) and list(order) != sorted(order)
    np.testing.assert_array_equal(view.treated[:], toy_dataset.read(treated[order]))
    assert len(view.controls) == 32
    assert not any("label" in a or "index" in a for a in ImageArray.__slots__)


def test_labelled_images_refuses_foreign_ids(toy_dataset):
    part = toy_dataset.labelled(toy_dataset.index.filter(pl.col("source") == "src0"))
    outside = toy_dataset.index.filter(pl.col("source") == "src1")["image_id"].to_numpy()[:3]
    assert len(part.read(part.treated_ids()[:3])) == 3
    with pytest.raises(DataError, match="not part of this set"):
        part.read(outside)
    assert set(part.labels(part.control_ids())) == {-1}


def test_store_survives_pickling_without_copying_maps(toy_dataset):
    import pickle

    toy_dataset.read(np.array([0]))
    clone = pickle.loads(pickle.dumps(toy_dataset.store))
    assert all(m is None for m in clone._maps)
    np.testing.assert_array_equal(clone.read(np.array([0]), np.array([0])), toy_dataset.store.read(np.array([0]), np.array([0])))
