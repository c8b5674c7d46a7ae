"""The cellprofiler method: the profile pipeline with pycytominer's normalisation and feature selection.

The featuriser itself is tested in test_core_cells_cellprofiler.py and end to end (on the check fold, in a
sealed worker too) by test_conformance_checks.py; here a fast frozen encoder stands in for it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycytominer")

from _method_data import SPARSE_RANDOM_FEATURES, split, view  # noqa: E402
from benchmark.core.profiles.featurisers import EncoderFeaturiser  # noqa: E402
from benchmark.errors import BenchError, MethodError  # noqa: E402
from benchmark.methods.base import AccessLevel  # noqa: E402
from benchmark.method_info import resolve_config  # noqa: E402
from benchmark.registry import get_method  # noqa: E402


def test_declaration_and_config():
    cls = get_method("cellprofiler")
    assert cls.access is AccessLevel.CONTROLS
    config = cls.Config()
    assert config.featuriser == "cellprofiler"
    assert config.operations == "variance_threshold,correlation_threshold,drop_outliers"
    quick = resolve_config(cls, quick=True)
    assert quick.featuriser.startswith("cellprofiler:") and quick.c_grid == "1"
    with pytest.raises(BenchError, match="corr_threshold"):
        cls.Config(corr_threshold=1.5)
    assert cls(cls.Config(operations="")).correction(0).operations == ()  # normalisation alone
    with pytest.raises(MethodError, match="blocklist"):
        cls(cls.Config(operations="variance_threshold,blocklist")).correction(0)


def test_fit_adapt_predict_on_the_toy_split(toy_dataset):
    train, val, target = split(toy_dataset)
    cls = get_method("cellprofiler")
    method = cls(cls.Config.from_dict({"featuriser": SPARSE_RANDOM_FEATURES, "c_grid": "1"})).fit(train, val, seed=0)
    report = method.fit_report()
    assert report["operations"] == ["variance_threshold", "correlation_threshold", "drop_outliers"]
    assert 0 < report["features_selected"] <= report["features_in"] <= 24
    assert report["selection_fitted_on_images"] == len(train.table) + len(val.table)
    assert "selected_by_category" not in report  # an encoder's features have no CellProfiler names
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    accuracies = []
    for plate in sorted(target["plate"].unique()):
        v, labels = view(toy_dataset, target, plate)
        probs = method.adapt(v).predict(v.treated[:])
        assert probs.shape == (len(labels), 8) and np.allclose(probs.sum(1), 1)
        accuracies.append((probs.argmax(1) == labels).mean())
    assert np.mean(accuracies) > 0.8  # the per-plate normalisation removes the held-out source's gains and offsets


def test_the_correction_gets_the_featurisers_cellprofiler_names():
    pytest.importorskip("cp_measure")
    cls = get_method("cellprofiler")
    method = cls(cls.Config(featuriser="cellprofiler:intensity"))
    method.featuriser_ = EncoderFeaturiser("cellprofiler:intensity")
    names = method.correction(0).names
    assert names == method.featuriser_.encoder.features and "Cells_Intensity_MeanIntensity_DNA" in names
