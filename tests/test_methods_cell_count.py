"""cell_count: nuclei per image (the ``cell-count`` featuriser), robust-standardised on each plate's DMSO, logistic regression.

The data are drawn (tests/_cells.py): an image of class k holds 1 + k nuclei, a DMSO image 3, 4 or 5,
and every image of source s holds s more (denser seeding); source src2 is the target.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from _cells import count_dataset, true_counts
from benchmark.core.cells.count import CellCountEncoder, feature_names
from benchmark.core.encoders.loading import available_encoder_backends, load_encoder
from benchmark.core.profiles.featurisers import load_featuriser
from benchmark.core.training.model_cache import FoldIdentity, fold_scope
from benchmark.errors import BenchError
from benchmark.registry import get_method

COUNTS = {k: 1 + k for k in range(8)}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return count_dataset(tmp_path_factory.mktemp("cells"), COUNTS)


def _split(dataset):
    index = dataset.index
    rest = index.filter(pl.col("source") != "src2")
    return (dataset.labelled(rest.filter(pl.col("batch").str.ends_with("_b0"))),
            dataset.labelled(rest.filter(pl.col("batch").str.ends_with("_b1"))),
            index.filter(pl.col("source") == "src2"))


def _view(dataset, target, plate):
    rows = target.filter((pl.col("plate") == plate) & ~pl.col("is_control"))
    view, order = dataset.plate_view(plate, rows["image_id"].to_numpy(), np.random.default_rng(0))
    return view, rows["label"].to_numpy()[order], rows["image_id"].to_numpy()[order]


def _fit(name, dataset, **config):
    train, val, _ = _split(dataset)
    cls = get_method(name)
    return cls(cls.Config.from_dict({"featuriser": "cell-count", "c_grid": "1,100", **config})).fit(train, val, seed=0)


@pytest.fixture(scope="module")
def fitted(cells):
    return _fit("cell_count", cells)


def test_the_features_of_a_plate_are_its_nuclei_counts(cells):
    encoder = load_encoder("cell-count")
    assert isinstance(encoder, CellCountEncoder) and encoder.dim == 1 and encoder.features == ["nuclei"]
    ids = cells.index.filter(pl.col("plate") == "src2_b0_p0")["image_id"].to_numpy()
    features = encoder.embed(cells.read(ids))
    assert features.dtype == np.float32 and features.shape == (len(ids), 1)
    np.testing.assert_array_equal(features[:, 0], true_counts(cells)[ids])


def test_the_featuriser_is_a_registered_encoder_keyed_by_its_code_and_parameters(cells):
    assert "cell-count" in available_encoder_backends()
    plain, areas = load_featuriser("cell-count", "cpu"), load_featuriser("cell-count:areas", "cpu")
    assert areas.dim == 6 and areas.encoder.features == feature_names(areas=True)
    assert plain.cache_key()["weights_sha256"] != areas.cache_key()["weights_sha256"]
    assert len(plain.cache_key()["weights_sha256"]) == 64 and plain.cache_key()["code"]
    x = cells.read(np.arange(4))
    with_areas = areas.embed(x)
    np.testing.assert_array_equal(with_areas[:, 0], plain.embed(x)[:, 0])
    assert ((with_areas[:, 1:] > 0) & (with_areas[:, 1:] < 1)).all()
    with pytest.raises(BenchError, match="takes no argument or 'areas', got 'volumes'"):
        load_encoder("cell-count:volumes")
    with pytest.raises(BenchError, match=r"takes uint8 images \(N, 5, H, W\)"):
        plain.embed(x[:, :3])


def test_counts_are_robust_standardised_on_the_plates_own_dmso(fitted, cells):
    _, _, target = _split(cells)
    view, _, ids = _view(cells, target, "src2_b1_p0")
    dmso = true_counts(cells)[target.filter((pl.col("plate") == "src2_b1_p0") & pl.col("is_control"))["image_id"]]
    median, mad = np.median(dmso), np.median(np.abs(dmso - np.median(dmso)))
    assert mad > 0
    fitted.adapt(view)
    counts = true_counts(cells)[ids].astype(np.float32)[:, None]
    np.testing.assert_allclose(fitted.transform_(counts)[:, 0], (counts[:, 0] - median) / (1.4826 * mad), rtol=1e-6)
    report = fitted.fit_report()
    assert report["featuriser"] == "cell-count" and report["embedding_dim"] == 1 and report["features_kept"] == 1
    assert report["correction"] == "robust MAD on the plate's DMSO" and report["correction_metrics"] is None


def test_the_standardisation_carries_the_classes_to_a_denser_plate(fitted, cells):
    """The target lab seeds more cells than any training lab: raw counts mislead, DMSO-relative ones do not."""
    _, _, target = _split(cells)
    uncorrected = _fit("profile_none", cells, metrics=False)
    for plate in ("src2_b0_p0", "src2_b1_p0"):
        view, labels, _ = _view(cells, target, plate)
        probs = fitted.adapt(view).predict(view.treated[:])
        assert probs.shape == (len(labels), 8) and np.allclose(probs.sum(axis=1), 1)
        assert (probs.argmax(1) == labels).mean() >= 0.9
        assert (uncorrected.adapt(view).predict(view.treated[:]).argmax(1) == labels).mean() <= 0.5


def test_features_are_cached_by_image_content_in_the_fold_folder(cells, tmp_path):
    fold = FoldIdentity("cells", "f", "source_out", 0, 0, "d", str(tmp_path))
    reports = []
    for _ in range(2):
        with fold_scope(fold):
            reports.append(_fit("cell_count", cells, c_grid="1").fit_report()["embedding_cache"])
    cold, warm = reports
    assert cold["files_written"] > 0 and cold["images_embedded"] == 256
    assert warm["images_embedded"] == 0 and warm["images_cached"] == 256 and warm["files_written"] == 0
