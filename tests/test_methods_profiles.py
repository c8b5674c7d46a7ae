"""The profile methods (profile_none, profile_mad, profile_sphering, profile_harmony, profile_combat) on the toy split."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from _method_data import SPARSE_RANDOM_FEATURES, split, view
from benchmark.core.profiles.data import TARGET
from benchmark.core.training.model_cache import FoldIdentity, fold_scope
from benchmark.errors import BenchError, MethodError
from benchmark.registry import get_method

NAMES = ("profile_none", "profile_mad", "profile_sphering", "profile_harmony", "profile_combat")
TRANSDUCTIVE = ("profile_harmony", "profile_combat")


def _targets(dataset, target):
    plates = sorted(target["plate"].unique())
    rng = np.random.default_rng(3)
    rows = target.filter(~pl.col("is_control"))
    return [dataset.plate_view(p, rows.filter(pl.col("plate") == p)["image_id"].to_numpy(), rng)[0] for p in plates]


def _fit(name, dataset, with_targets=True, **config):
    train, val, target = split(dataset)
    cls = get_method(name)
    if with_targets and cls.access.sees_targets_in_fit:
        train = dataset.labelled(train.table, _targets(dataset, target))
    method = cls(cls.Config.from_dict({"featuriser": SPARSE_RANDOM_FEATURES, "c_grid": "1", **config}))
    return method.fit(train, val, seed=0), target


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    return {name: _fit(name, toy_dataset)[0] for name in NAMES}


def _target_accuracy(method, dataset) -> float:
    _, _, target = split(dataset)
    accuracies = []
    for plate in sorted(target["plate"].unique()):
        v, labels = view(dataset, target, plate)
        probs = method.adapt(v).predict(v.treated[:])
        assert probs.shape == (len(labels), 8) and np.allclose(probs.sum(1), 1)
        accuracies.append((probs.argmax(1) == labels).mean())
    return float(np.mean(accuracies))


def test_every_correction_recovers_what_the_new_sources_gain_and_offset_cost(fitted, toy_dataset):
    accuracy = {name: _target_accuracy(fitted[name], toy_dataset) for name in NAMES}
    assert accuracy["profile_none"] > 0.25  # above chance (1/8), hurt by the held-out source's gains and offsets
    for name in NAMES[1:]:
        assert accuracy[name] > max(0.8, accuracy["profile_none"] + 0.2), accuracy


@pytest.mark.parametrize("name", NAMES)
def test_each_correction_reports_its_metrics(fitted, toy_dataset, name):
    method = fitted[name]
    _, _, target = split(toy_dataset)
    report = method.fit_report()
    metrics = report["correction_metrics"]
    assert metrics["batch"] == "source" and {"before", "after"} <= set(metrics)
    for scores in (metrics["before"], metrics["after"]):
        assert 0 <= scores["overall"] <= 1 and scores["n_batches"] == 3  # three training sources
    assert report["featuriser"] == SPARSE_RANDOM_FEATURES and report["C"] == 1.0
    assert report["embedding_cache"]["folder"] is None  # in process: no fold, nothing on disk
    assert report["n_images"]["target"] == (len(target) if name in TRANSDUCTIVE else 0)
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # the record stores it as JSON


def test_no_correction_leaves_the_metrics_unchanged_and_corrections_change_them(fitted):
    before_after = {n: fitted[n].fit_report()["correction_metrics"] for n in NAMES}
    none = before_after["profile_none"]
    assert none["before"] == none["after"]
    for name in NAMES[1:]:
        assert before_after[name]["after"] != before_after[name]["before"], name


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_joint_corrections_mix_the_sources_better(fitted, name):
    metrics = fitted[name].fit_report()["correction_metrics"]
    assert metrics["after"]["ilisi"] > metrics["before"]["ilisi"]
    assert metrics["after"]["batch"] > metrics["before"]["batch"]


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_joint_corrections_need_the_target_plates_in_fit(toy_dataset, name):
    method, target = _fit(name, toy_dataset, with_targets=False)
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    with pytest.raises(MethodError, match="plate src3_b0_p0 was not part of .*joint fit"):
        method.adapt(v)


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_source_as_batch_puts_the_target_plates_in_one_batch(toy_dataset, name):
    method, _ = _fit(name, toy_dataset, batch_key="source")
    assert method.correction_.batch_of_["src3_b0_p0"] == TARGET
    assert method.correction_.batch_of_["src0_b0_p0"] == "src0"
    assert method.fit_report()["n_batches"] == 4


@pytest.mark.parametrize("name", ["profile_mad", "profile_sphering"])
def test_a_target_plate_without_dmso_is_a_clear_error(fitted, toy_dataset, name):
    _, _, target = split(toy_dataset)
    v, _ = view(toy_dataset, target, "src3_b0_p0", with_controls=False)
    with pytest.raises(MethodError, match="plate src3_b0_p0 has 0 DMSO images"):
        fitted[name].adapt(v)


def test_per_plate_corrections_use_the_plates_own_dmso(fitted, toy_dataset):
    _, _, target = split(toy_dataset)
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    other, _ = view(toy_dataset, target, "src3_b1_p1")
    x = np.asarray(v.treated[:])
    for name in ("profile_mad", "profile_sphering"):
        method = fitted[name]
        base = method.adapt(v).predict(x)
        np.testing.assert_allclose(method.predict(x[:4]), base[:4], rtol=1e-5, atol=1e-8)  # images do not interact
        assert not np.allclose(method.adapt(other).predict(x), base)


def test_embeddings_are_cached_in_the_fold_folder_and_read_back(toy_dataset, tmp_path):
    fold = FoldIdentity("toy", "f", "source_out", 0, 0, "d", str(tmp_path))
    _, _, target = split(toy_dataset)
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    runs = []
    for _ in range(2):
        with fold_scope(fold):
            method, _ = _fit("profile_mad", toy_dataset)
        runs.append((method.adapt(v).predict(v.treated[:]), method.fit_report()["embedding_cache"]))
    (first, cold), (second, warm) = runs
    assert cold["folder"] == "fold models folder" and cold["files_written"] > 0 and cold["images_embedded"] > 0
    assert warm["images_embedded"] == 0 and warm["images_cached"] == cold["images_embedded"]
    assert warm["files_written"] == 0 and len(list(tmp_path.glob("emb-*.npz"))) == cold["files_written"]
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_the_uncorrected_metrics_are_computed_once_per_fold_and_seed(toy_dataset, tmp_path):
    fold = FoldIdentity("toy", "f", "source_out", 0, 0, "d", str(tmp_path))
    blocks = {}
    for name in ("profile_none", "profile_sphering"):
        with fold_scope(fold):
            method, _ = _fit(name, toy_dataset)
        blocks[name] = method.fit_report()["correction_metrics"]
    assert not blocks["profile_none"]["before_read_from_cache"] and blocks["profile_sphering"]["before_read_from_cache"]
    assert blocks["profile_sphering"]["before"] == blocks["profile_none"]["before"]
    assert len(list(tmp_path.glob("scores-*.json"))) == 1
    method, _ = _fit("profile_sphering", toy_dataset)  # in process (no fold folder): computed, the same numbers
    assert method.fit_report()["correction_metrics"]["before"] == blocks["profile_none"]["before"]


def test_erm_penultimate_layer_as_featuriser():
    from benchmark.conformance.checks import check_data

    data = check_data()
    cls = get_method("profile_none")
    method = cls(cls.Config(featuriser="erm", c_grid="1")).fit(data.train, data.val, seed=0)
    report = method.fit_report()
    assert report["featuriser"] == "erm" and report["embedding_dim"] > 0
    assert report["featuriser_key"]["weights_sha256"] and report["erm_source_model"]["cached"] is False
    plate = next(iter(data.targets))
    v = data.view(plate)
    probs = method.adapt(v).predict(v.treated[:])
    assert probs.shape == (len(data.targets[plate]), 8)


def test_config_errors_say_what_is_valid(toy_dataset):
    with pytest.raises(BenchError, match="batch_key 'lab' is not valid; use one of plate, source"):
        get_method("profile_harmony").Config(batch_key="lab")
    with pytest.raises(MethodError, match="c_grid 'x' is not a comma-separated list of positive numbers"):
        _fit("profile_none", toy_dataset, c_grid="x")


def test_the_contributing_guide_profile_correction_runs(toy_dataset):
    """CONTRIBUTING.md's profile-correction example, executed as written, fits, adapts and predicts."""
    from pathlib import Path

    from benchmark.core.profiles.corrections import Correction, Transform
    from benchmark.methods._profile import ProfileMethod
    from benchmark.methods.base import AccessLevel
    from benchmark.registry import register_method, unregister_method

    guide = (Path(__file__).parents[1] / "CONTRIBUTING.md").read_text()
    section = guide[guide.index("**A profile correction**"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]
    namespace = {"np": np, "register_method": register_method, "ProfileMethod": ProfileMethod,
                 "AccessLevel": AccessLevel, "Correction": Correction, "Transform": Transform}
    exec(compile("from __future__ import annotations\n" + code, "CONTRIBUTING.md", "exec"), namespace)  # noqa: S102
    try:
        cls = get_method("profile_centre")
        train, val, target = split(toy_dataset)
        method = cls(cls.Config(featuriser=SPARSE_RANDOM_FEATURES, c_grid="1", metrics=False)).fit(train, val, seed=0)
        v, labels = view(toy_dataset, target, "src3_b0_p0")
        probs = method.adapt(v).predict(v.treated)
        assert probs.shape == (len(labels), 8) and method.fit_report()["correction"] == "centre on DMSO"
    finally:
        unregister_method("profile_centre")
