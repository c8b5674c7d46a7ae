"""Runs through the sealed worker give the in-process results bit for bit; records say how the worker did."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from _toy_methods import Centroid
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.protocol.loop import resolve_config, run_protocol
from benchmark.records import RECORD_FORMAT, json_safe, load_records, read_predictions
from benchmark.registry import get_method
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("toy_methods")


def untimed(metrics: dict) -> dict:
    """Metrics without the per-plate timings (which differ between any two runs)."""
    return {**metrics, "per_plate": [{k: v for k, v in p.items() if k != "adapt_predict_s"}
                                     for p in metrics["per_plate"]]}


def sealed_and_in_process(dataset, tmp_path, name, overrides=None, quick=False, fold=1, seed=0):
    (outcome,) = run_protocol(name, "source_out", dataset, seeds=[seed], folds=[fold], device="cpu",
                              results_dir=tmp_path / "res", quick=quick, overrides=overrides)
    assert outcome.status == "ok", outcome.error
    found = load_records(tmp_path / "res")
    (record,) = found.quick if quick else found.ok
    cls = get_method(name)
    local = fit_and_evaluate(cls(resolve_config(cls, overrides, quick), device="cpu"), dataset,
                             make_folds(dataset.index, "source_out")[fold], seed)
    return record, local


@pytest.mark.parametrize("name, overrides", [("_test_plate_std", None), ("_test_ctrl_std", None),
                                             ("erm", {"crop": "0"}), ("cs_arm_bn", {"crop": "0"})])
def test_sealed_predictions_are_bit_identical_to_in_process(toy_dataset, tmp_path, name, overrides):
    record, local = sealed_and_in_process(toy_dataset, tmp_path, name, overrides, quick=True)
    sealed = read_predictions(record)
    assert sealed.equals(local.predictions)
    assert untimed(record.data["metrics"]) == untimed(json.loads(json.dumps(json_safe(local.metrics))))
    report = record.data["fit_report"]
    assert set(report) == set(local.fit_report)
    # measured times differ between any two runs; the source-model entry says where the sealed run's model came
    # from (the fold's cache: trained now or loaded), which an in-process run has no cache for
    skip = ("second", "wait", "_s", "source_model")
    assert {k: v for k, v in report.items() if not any(t in k for t in skip)} == \
        {k: v for k, v in local.fit_report.items() if not any(t in k for t in skip)}
    if "source_model" in report:
        assert "key" in report["source_model"] and local.fit_report["source_model"]["cached"] is False


def test_every_record_says_how_the_worker_did_and_keeps_its_format(toy_dataset, tmp_path):
    record, _ = sealed_and_in_process(toy_dataset, tmp_path, "_test_centroid")
    data = record.data
    assert data["record_format"] == RECORD_FORMAT
    worker = data["worker"]
    assert worker["isolation"] == "sealed" and worker["exit_code"] == 0
    assert 0 < worker["start_s"] < worker["wall_s"] and worker["peak_rss_mb"] > 0
    assert worker["method_s"] <= worker["wall_s"] and worker["overhead_s"] >= 0
    assert worker["time_limit_s"] == 24 * 3600 and worker["memory_limit_gb"] is None
    assert {"fit_s", "adapt_predict_s", "evaluate_s", "total_s"} <= set(data["timings"])


def test_a_transductive_method_gets_the_target_plates_in_fit_in_both_hosts(toy_dataset, tmp_path):
    record, local = sealed_and_in_process(toy_dataset, tmp_path, "_test_transductive")
    fold = make_folds(toy_dataset.index, "source_out")[1]
    targets = toy_dataset.index[fold.target_ids]
    expected = [[p, int((~g["is_control"]).sum()), int(g["is_control"].sum())]
                for (p,), g in targets.sort("plate").group_by("plate", maintain_order=True)]
    assert record.data["fit_report"]["targets"] == local.fit_report["targets"] == expected
    assert record.data["fit_report"]["val_targets"] == 0
    assert read_predictions(record).equals(local.predictions)
    assert record.data["method"]["access"] == "transductive"


def test_other_access_levels_get_no_targets_in_fit(toy_dataset):
    fold = make_folds(toy_dataset.index, "source_out")[0]
    seen = {}

    class Spy(Centroid):
        def fit(self, train, val, seed):
            seen["targets"] = train.targets
            return super().fit(train, val, seed)

    fit_and_evaluate(Spy(), toy_dataset, fold, 0)
    assert seen["targets"] == ()


def test_views_handed_to_a_sealed_method_are_cut_to_its_access_level(toy_dataset, tmp_path):
    """The sealed _test_ctrl_std sees only DMSO images in adapt: it must score as in process (1.0 on the toy)."""
    record, local = sealed_and_in_process(toy_dataset, tmp_path, "_test_ctrl_std", fold=0)
    assert record.data["metrics"]["out_of_domain"]["accuracy"] == local.metrics["out_of_domain"]["accuracy"] == 1.0
    predictions = read_predictions(record)
    assert (predictions["label"].to_numpy() == toy_dataset.labels[predictions["image_id"].to_numpy()]).all()
    assert predictions.filter(pl.col("part") == "in_domain").height == len(make_folds(
        toy_dataset.index, "source_out")[0].in_domain_ids)
    assert np.isfinite(predictions["prob_" + toy_dataset.meta.class_names[0]].to_numpy()).all()
