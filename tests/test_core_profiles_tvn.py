"""Typical Variation Normalization against its definition (DESIGN.md §2)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.profiles.tvn import apply_tvn, fit_tvn, plate_tvn
from benchmark.errors import MethodError


def _power(cov, p):
    w, v = np.linalg.eigh(cov)
    return v @ np.diag(w ** p) @ v.T


def _cov(x, ridge):
    return np.cov(x, rowvar=False) + ridge * np.eye(x.shape[1])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(4, 4))
    plates = np.repeat(["a", "b", "c"], 30)
    offsets = {"a": 0.0, "b": 2.0, "c": -1.0}
    dmso = rng.normal(size=(90, 4)) @ mix + np.array([offsets[p] for p in plates])[:, None]
    return dmso, plates, rng


def test_tvn_matches_a_direct_computation_of_its_definition(data):
    dmso, plates, rng = data
    ridge = 0.5
    ref = fit_tvn(dmso, plates, ridge=ridge)
    # direct: standardise with DMSO stats, PCA on DMSO, per-plate standardise, whiten, re-colour
    z = (dmso - dmso.mean(0)) / dmso.std(0)
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    y = (z - z.mean(0)) @ vt.T
    per_plate = {p: ((y[plates == p] - y[plates == p].mean(0)) / y[plates == p].std(0)) for p in "abc"}
    pooled = _cov(np.concatenate([per_plate[p] for p in "abc"]), ridge)
    target = rng.normal(size=(20, 4)) * 3 + 1
    target_dmso = rng.normal(size=(25, 4)) * 2 - 1
    yt = ((target - dmso.mean(0)) / dmso.std(0) - z.mean(0)) @ vt.T
    yd = ((target_dmso - dmso.mean(0)) / dmso.std(0) - z.mean(0)) @ vt.T
    m, s = yd.mean(0), yd.std(0)
    expected = ((yt - m) / s) @ _power(_cov((yd - m) / s, ridge), -0.5) @ _power(pooled, 0.5)
    got = apply_tvn(ref, plate_tvn(ref, target_dmso), target)
    # PCA axes are defined up to sign: compare up to a per-component sign
    signs = np.sign(np.sum(got * expected, axis=0))
    np.testing.assert_allclose(got * signs, expected, rtol=1e-4, atol=1e-4)


def test_a_plate_with_shifted_and_scaled_embeddings_is_mapped_back(data):
    dmso, plates, rng = data
    ref = fit_tvn(dmso, plates)
    plate_dmso = dmso[plates == "a"]
    treated = rng.normal(size=(15, 4)) @ rng.normal(size=(4, 4))
    shift, scale = rng.normal(size=4) * 5, 3.0
    original = apply_tvn(ref, plate_tvn(ref, plate_dmso), treated)
    moved = apply_tvn(ref, plate_tvn(ref, plate_dmso * scale + shift), treated * scale + shift)
    np.testing.assert_allclose(moved, original, rtol=1e-4, atol=1e-4)
    # without the plate's own DMSO the shift is not undone
    naive = apply_tvn(ref, plate_tvn(ref, plate_dmso), treated * scale + shift)
    assert np.abs(naive - original).max() > 1


def test_transform_of_the_training_dmso_has_the_pooled_covariance(data):
    dmso, plates, _ = data
    ref = fit_tvn(dmso, plates, ridge=0.0, n_components=3)
    assert ref.components.shape == (3, 4)
    out = apply_tvn(ref, plate_tvn(ref, dmso[plates == "b"]), dmso[plates == "b"])
    assert out.shape == (30, 3)
    np.testing.assert_allclose(np.cov(out, rowvar=False, ddof=1), ref.recolour @ ref.recolour, atol=1e-6)


def test_too_few_dmso_embeddings_is_a_clear_error(data):
    dmso, plates, _ = data
    ref = fit_tvn(dmso, plates)
    with pytest.raises(MethodError, match="at least 2 DMSO embeddings of the plate"):
        plate_tvn(ref, dmso[:1])
