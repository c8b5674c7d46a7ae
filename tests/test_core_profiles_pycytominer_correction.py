"""pycytominer's recipe as a profile correction: per-plate mad_robustize on DMSO, feature_select on the training plates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pycytominer = pytest.importorskip("pycytominer")

from benchmark.core.profiles.data import TARGET, UNKNOWN, Profiles, concat  # noqa: E402
from benchmark.core.profiles.pipeline import correct  # noqa: E402
from benchmark.core.profiles.pycytominer_correction import PycytominerCorrection, select_features  # noqa: E402
from benchmark.errors import MethodError  # noqa: E402

D = 6


def plate_profiles(plate: str, source: str, seed: int, n: int = 40, n_dmso: int = 16) -> Profiles:
    """``n`` images (the first ``n_dmso`` DMSO) of one plate with ``D`` features and a plate-specific shift and scale."""
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.normal(0, 3, D), rng.uniform(0.5, 2, D), size=(n, D))
    x[n_dmso:, 0] += 2.0  # treated images differ on feature 0
    x[:, 4] = 2 * x[:, 3] + 0.01 * rng.normal(size=n)  # a near copy of feature 3: correlation_threshold drops one
    labels = np.where(np.arange(n) < n_dmso, -1, np.arange(n) % 8)
    if source == TARGET:
        labels = np.where(labels < 0, -1, UNKNOWN)
    return Profiles(x.astype(np.float32), np.full(n, plate), np.full(n, source), np.full(n, plate), np.full(n, ""),
                    labels, labels == -1)


def training() -> Profiles:
    return concat([plate_profiles(f"p{i}", f"lab{i % 2}", i) for i in range(4)])


def test_normalisation_is_pycytominers_mad_robustize_on_the_plates_dmso():
    profiles = training()
    fitted = PycytominerCorrection(operations=()).fit(profiles)
    ours = correct(fitted, profiles)
    for plate in ("p0", "p3"):
        rows = profiles.plate == plate
        frame = pd.DataFrame(profiles.x[rows].astype(np.float64), columns=[f"f{i}" for i in range(D)])
        frame["Metadata_dmso"] = profiles.is_control[rows]
        expected = pycytominer.normalize(frame, features=list(frame.columns[:D]), meta_features=["Metadata_dmso"],
                                         samples="Metadata_dmso == True", method="mad_robustize")
        np.testing.assert_allclose(ours.x[rows], expected[frame.columns[:D]].to_numpy(), rtol=1e-5, atol=1e-5)
        dmso = ours.x[rows & profiles.is_control]
        np.testing.assert_allclose(np.median(dmso, axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(1.4826 * np.median(np.abs(dmso), axis=0), 1, rtol=1e-5)


def test_feature_selection_is_pycytominers_fitted_on_the_training_plates_only():
    train = training()
    names = [f"Cells_Intensity_F{i}" for i in range(D)]
    alone = PycytominerCorrection(names=names).fit(train)
    expected = select_features(correct(alone.normalise_, train).x, names)
    assert np.array_equal(alone.selected_, expected) and alone.selected_.sum() == D - 1 and not alone.selected_[4]
    # a target plate where feature 1 copies feature 2 and feature 5 explodes: the selection does not move
    target = plate_profiles("t0", TARGET, 99)
    target.x[:, 1] = target.x[:, 2]
    target.x[16:, 5] = 1e6
    with_target = PycytominerCorrection(names=names).fit(concat([train, target]))
    assert np.array_equal(with_target.selected_, alone.selected_)
    transform = with_target.plate("t0", target.x[target.is_control])
    assert transform(target.x).shape == (len(target), D - 1)
    report = with_target.describe()
    assert report["features_selected"] == D - 1 and report["selection_fitted_on_images"] == len(train)
    assert report["selected_by_category"] == {"Cells_Intensity": D - 1}


def test_each_operation_drops_what_it_should():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    x[:, 1] = 1 + 1e-4 * rng.normal(size=200)       # variance 1e-8 < 1e-6
    x[:, 3] = x[:, 0] + 0.01 * rng.normal(size=200)  # correlation with feature 0 > 0.9 (pycytominer: signed, not |r|)
    x[7, 4] = 600.0                                   # one value beyond 500
    names = [f"f{i}" for i in range(5)]
    assert select_features(x, names, ["variance_threshold"]).tolist() == [True, False, True, True, True]
    assert select_features(x, names, ["drop_outliers"]).tolist() == [True, True, True, True, False]
    assert select_features(x, names, ["correlation_threshold"]).sum() == 4
    assert select_features(x, names).sum() == 2
    with pytest.raises(ValueError, match="names"):
        select_features(x, names[:4])


def test_unfitted_and_degenerate_inputs_fail_clearly():
    with pytest.raises(MethodError, match="not fitted"):
        PycytominerCorrection().plate("p0", np.zeros((4, D)))
    target_only = plate_profiles("t0", TARGET, 1)
    with pytest.raises(MethodError, match="training plates"):
        PycytominerCorrection().fit(target_only)
    with pytest.raises(MethodError, match="feature names"):
        PycytominerCorrection(names=["a", "b"]).fit(training())
