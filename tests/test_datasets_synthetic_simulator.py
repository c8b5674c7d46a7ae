"""The synthetic simulator: determinism, structure, source effects, phenotypes, cache handling."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmark.constants import DMSO_ID, POSCONS, dmso_wells
from benchmark.datasets import load_dataset
from benchmark.datasets.dataset import open_dataset
from benchmark.datasets.synthetic import (SIMULATOR_VERSION, SimulatorConfig, cache_path, generate_synthetic,
                                          load_synthetic, pretraining_images)
from benchmark.datasets.synthetic.cells import AGP, DNA, ER, MITO, RNA, draw_well
from benchmark.datasets.synthetic.phenotypes import BY_LABEL, PHENOTYPES
from benchmark.datasets.synthetic.render import render
from benchmark.errors import BenchError
from benchmark.splits import make_folds

SMALL = dict(size="tiny", batches_per_source=1, plates_per_batch=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLATEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PLATEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    ds = load_synthetic(size="tiny", progress=False)
    mp.undo()
    return ds


def _channel_stats(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32).reshape(len(images), images.shape[1], -1)
    pct = np.percentile(x, [5, 50, 95], axis=-1).transpose(1, 0, 2).reshape(len(x), -1)
    return np.concatenate([x.mean(-1), x.std(-1), pct], axis=1)


def _source_accuracy(ds, n: int = 1024) -> float:
    """Cross-validated accuracy of a linear classifier telling sources apart from channel statistics."""
    ids = np.random.default_rng(0).permutation(len(ds.index))[:n]
    feats = _channel_stats(ds.read(ids))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(cross_val_score(model, feats, ds.index["source"].to_numpy()[ids], cv=3).mean())


def test_structure_and_real_control_layout(tiny):
    idx = tiny.index
    assert tiny.image_shape == (5, 32, 32)
    assert idx["source"].n_unique() == 4
    assert idx.group_by("source").agg(pl.col("batch").n_unique())["batch"].min() == 3
    assert idx.group_by("batch").agg(pl.col("plate").n_unique())["plate"].min() == 2
    assert idx["plate"].n_unique() == 24 and idx["batch"].n_unique() == 12
    assert idx.group_by("plate", "well").len()["len"].unique().to_list() == [2]
    plate = idx.filter(pl.col("plate") == idx["plate"][0])
    wells = dict(plate.select("well", "compound").unique().iter_rows())
    assert sorted(w for w, c in wells.items() if c == DMSO_ID) == sorted(dmso_wells())
    for label, _name, jcp, _mech, positions in POSCONS:
        assert sorted(w for w, c in wells.items() if c == jcp) == sorted(positions)
        assert set(plate.filter(pl.col("compound") == jcp)["label"].to_list()) == {label}
    assert tiny.meta.settings["simulator_version"] == SIMULATOR_VERSION
    assert tiny.meta.settings["severity"] == 1.0
    assert len(make_folds(idx, "source_out")) == 4  # the splits work on the tiny preset


def test_same_config_gives_same_bytes(tmp_path):
    config = SimulatorConfig(seed=3, n_sources=2, **SMALL)
    a = generate_synthetic(config, tmp_path / "a", progress=False)
    b = generate_synthetic(config, tmp_path / "b", progress=False)
    assert a.fingerprint == b.fingerprint
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    c = generate_synthetic(SimulatorConfig(seed=4, n_sources=2, **SMALL), tmp_path / "c", progress=False)
    assert c.shards[0].sha256 != a.shards[0].sha256


def test_default_severity_separates_sources(tiny):
    assert _source_accuracy(tiny) > 0.85


def test_severity_zero_makes_sources_indistinguishable(tmp_path):
    generate_synthetic(SimulatorConfig(severity=0.0, **SMALL), tmp_path / "s0", progress=False)
    ds = open_dataset(tmp_path / "s0")
    assert _source_accuracy(ds) < 0.40  # chance is 0.25


def test_negative_severity_is_a_clear_error():
    with pytest.raises(BenchError, match=r"severity must be a number >= 0.*got -0.5"):
        SimulatorConfig(severity=-0.5)
    with pytest.raises(BenchError, match="severity"):
        load_dataset("synthetic", severity=-1, size="tiny")
    with pytest.raises(BenchError, match="unknown synthetic option.*n_plates.*valid.*plates_per_batch"):
        load_synthetic(n_plates=3)
    with pytest.raises(BenchError, match="unknown size preset 'tinny'.*Did you mean 'tiny'"):
        SimulatorConfig(size="tinny")


def test_unwritable_cache_names_folder_and_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PLATEBENCH_CACHE", str(blocker / "cache"))
    with pytest.raises(BenchError, match=r"file/cache/synthetic is not writable.*PLATEBENCH_CACHE"):
        load_synthetic(progress=False, **SMALL)


def test_corrupt_shard_is_detected_and_regenerated(capsys):
    ds = load_synthetic(progress=False, n_sources=2, **SMALL)
    original = ds.read(np.arange(len(ds.index)))
    shard = ds.root / ds.meta.shards[1].file
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # same size, altered content: only the checksum catches it
    shard.write_bytes(bytes(data))
    again = load_synthetic(progress=False, n_sources=2, **SMALL)
    err = capsys.readouterr().err
    assert "corrupt" in err and shard.name in err and err.count("\n") == 1
    np.testing.assert_array_equal(again.read(np.arange(len(again.index))), original)
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated
    load_synthetic(progress=False, n_sources=2, **SMALL)
    assert "truncated" in capsys.readouterr().err
    assert not [p for p in cache_path(SimulatorConfig(n_sources=2, **SMALL)).parent.iterdir()
                if p.name.startswith(".")]  # no temporary folders left behind


def _features(label: int, n_sites: int = 40, seed: int = 0) -> dict[str, float]:
    """Cell-model and clean-image features of ``n_sites`` 64 px sites of one compound (no technical effects)."""
    cfg = SimulatorConfig()
    rng = np.random.default_rng([seed, label + 1])
    tables = draw_well(rng, cfg.biology, BY_LABEL[label], n_sites, 64, 1.0, 1.0)
    clean = render(tables, 64, rng)
    nuc, cells = tables.nuclei, tables.cells
    per_cell = lambda ch: float(clean[:, ch].sum() / len(cells["site"]))  # noqa: E731
    return {
        "cells": len(cells["site"]) / n_sites,
        "nuclei_per_cell": len(nuc["site"]) / len(cells["site"]),
        "cell_area": float(np.mean(cells["a"] * cells["b"])),
        "nucleus_area": float(np.sum(nuc["a"] * nuc["b"]) / len(cells["site"])),  # per cell
        "aspect": float(np.mean(np.log(cells["a"] / cells["b"]))),
        "mito": per_cell(MITO), "agp": per_cell(AGP), "dna": per_cell(DNA),
        "er_p99": float(np.percentile(clean[:, ER], 99)),
        "rna_p99": float(np.percentile(clean[:, RNA], 99.5)),
        "vacuoles": len(tables.vacuoles["site"]) / len(cells["site"]),
    }


# (compound, feature, direction vs DMSO): the phenotype each compound was designed to have
EXPECTED = [
    ("AMG900", "cell_area", +1), ("AMG900", "nucleus_area", +1), ("AMG900", "nuclei_per_cell", +1),
    ("AMG900", "cells", -1),
    ("dexamethasone", "aspect", +1), ("dexamethasone", "cell_area", +1),
    ("FK-866", "mito", -1), ("FK-866", "cells", -1),
    ("LY2109761", "aspect", -1), ("LY2109761", "agp", -1),
    ("NVS-PAK1-1", "agp", +1),
    ("quinidine", "vacuoles", +1), ("quinidine", "cell_area", +1),
    ("TC-S-7004", "rna_p99", +1), ("TC-S-7004", "nucleus_area", +1),
    ("aloxistatin", "er_p99", +1),
]


@pytest.fixture(scope="module")
def features():
    return {label: _features(label) for label in [-1, *range(len(PHENOTYPES))]}


@pytest.mark.parametrize("compound,feature,sign", EXPECTED)
def test_phenotype_differs_from_dmso_as_designed(features, compound, feature, sign):
    label = list(PHENOTYPES).index(compound)
    treated, dmso = features[label][feature], features[-1][feature]
    assert np.sign(treated - dmso) == sign, f"{compound}: {feature} {treated:.3f} vs DMSO {dmso:.3f}"


def test_pretraining_images_come_from_other_labs(tiny):
    images = pretraining_images(40, seed=0, image_size=32)
    assert images.shape == (40, 5, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, pretraining_images(40, seed=0, image_size=32))
    assert images.std() > 5  # not blank
