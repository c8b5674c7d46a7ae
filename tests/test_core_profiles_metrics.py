"""Correction metrics on hand-made profiles: perfectly mixed batches score high, separated ones low."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.profiles import metrics as cm
from benchmark.errors import MethodError


def _wells(separated: bool, n_batches: int = 3, per: int = 30, d: int = 8, seed: int = 0, signal: float = 6.0):
    """Treated wells of 2 classes on every batch (one plate per batch) and DMSO wells; batches far apart or not."""
    rng = np.random.default_rng(seed)
    x, batch, label, plate, control = [], [], [], [], []
    for b in range(n_batches):
        shift = 40.0 * np.eye(d)[-1 - b] if separated else np.zeros(d)
        for k in (-1, 0, 1):
            centre = np.zeros(d) if k < 0 else signal * np.eye(d)[k]
            x.append(centre + shift + rng.normal(size=(per, d)))
            batch += [f"lab{b}"] * per
            label += [k] * per
            plate += [f"plate{b}"] * per
            control += [k < 0] * per
    return np.concatenate(x), np.array(batch), np.array(label), np.array(plate), np.array(control)


@pytest.fixture(scope="module")
def mixed():
    return _wells(separated=False)


@pytest.fixture(scope="module")
def separated():
    return _wells(separated=True)


def _treated(data):
    x, batch, label, _, control = data
    return x[~control], batch[~control], label[~control]


def test_silhouette_batch_is_near_one_when_mixed_and_low_when_separated(mixed, separated):
    assert cm.silhouette_batch(*_treated(mixed)) > 0.9
    assert cm.silhouette_batch(*_treated(separated)) < 0.2


def test_ilisi_is_near_one_when_mixed_and_zero_when_separated(mixed, separated):
    x, batch, _ = _treated(mixed)
    assert cm.ilisi(x, batch) > 0.8
    x, batch, _ = _treated(separated)
    assert cm.ilisi(x, batch) < 0.05


def test_kbet_accepts_mixed_neighbourhoods_and_rejects_separated_ones(mixed, separated):
    assert cm.kbet(*_treated(mixed)) > 0.8
    assert cm.kbet(*_treated(separated)) < 0.05


def test_silhouette_label_is_high_for_separated_classes_and_middling_for_noise(mixed):
    x, _, label = _treated(mixed)
    assert cm.silhouette_label(x, label) > 0.7
    assert 0.4 < cm.silhouette_label(np.random.default_rng(1).normal(size=x.shape), label) < 0.6


def test_map_retrieves_replicates_against_same_plate_dmso(mixed):
    x, _, label, plate, control = mixed
    compound = np.where(control, "DMSO", label.astype(str))
    strong = cm.replicate_map(x, compound, plate, control, null_size=200)
    assert strong["map"] > 0.9 and strong["fraction_retrieved"] == 1.0
    weak = cm.replicate_map(np.random.default_rng(2).normal(size=x.shape), compound, plate, control, null_size=200)
    # noise: AP at the base rate of 89 replicates among 89 + 30 same-plate DMSO wells, and no compound significant
    assert weak["map"] == pytest.approx(89 / 119, abs=0.05) and weak["fraction_retrieved"] == 0.0


def test_map_without_dmso_or_without_treated_wells_is_none(mixed):
    x, _, label, plate, control = mixed
    assert cm.replicate_map(x[~control], label[~control].astype(str), plate[~control], control[~control]) == \
        {"map": None, "fraction_retrieved": None}
    assert cm.replicate_map(x[control], label[control].astype(str), plate[control], control[control])["map"] is None


def test_overall_is_point_four_batch_plus_point_six_biology(mixed, separated):
    good = cm.correction_scores(*mixed, null_size=200)
    bad = cm.correction_scores(*separated, null_size=200)
    for scores in (good, bad):
        batch = np.mean([scores[k] for k in cm.BATCH_SCORES])
        bio = np.mean([scores[k] for k in cm.BIO_SCORES])
        assert scores["batch"] == pytest.approx(batch) and scores["bio"] == pytest.approx(bio)
        assert scores["overall"] == pytest.approx(0.4 * batch + 0.6 * bio)
        assert scores["n_batches"] == 3 and scores["n_treated_wells"] == 180 and scores["n_wells"] == 270
    assert good["batch"] > 0.8 > 0.2 > bad["batch"] and good["overall"] > bad["overall"]


def test_one_batch_leaves_the_batch_scores_out():
    x, batch, label, plate, control = _wells(separated=False, n_batches=1)
    scores = cm.correction_scores(x, batch, label, plate, control, null_size=100)
    assert scores["silhouette_batch"] is None and scores["ilisi"] is None and scores["kbet"] is None
    assert scores["batch"] is None and scores["overall"] is None and scores["bio"] is not None


def test_mismatched_inputs_are_a_clear_error(mixed):
    x, batch, label, plate, control = mixed
    with pytest.raises(MethodError, match="correction metrics need profiles"):
        cm.correction_scores(x, batch[:-1], label, plate, control)
