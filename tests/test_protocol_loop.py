"""The protocol runner on the toy dataset with small test-only methods (tests/_toy_methods.py)."""

import shutil

import numpy as np
import polars as pl
import pytest
from _toy_methods import Centroid, ControlStd, PlateStd

from benchmark.datasets.dataset import open_dataset, write_dataset
from benchmark.errors import BenchError, MethodError, UnknownNameError
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.protocol.method_calls import check_probabilities
from benchmark.protocol.loop import (parse_overrides, record_is_current, resolve_config, resolve_device, run_protocol,
                                     select_folds)
from benchmark.records import load_records, read_predictions
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("toy_methods")


def run(ds, tmp_path, method, split="source_out", **kw):
    kw.setdefault("seeds", [0])
    kw.setdefault("folds", [0])
    return run_protocol(method, split, ds, device="cpu", results_dir=tmp_path / "res", **kw)


def test_run_writes_records_whose_metrics_match_the_predictions(toy_dataset, tmp_path):
    out = run(toy_dataset, tmp_path, "_test_ctrl_std", split="batch_out", seeds=[0, 1], folds=[0, 1])
    assert [(o.fold, o.seed, o.status) for o in out] == [(0, 0, "ok"), (0, 1, "ok"), (1, 0, "ok"), (1, 1, "ok")]
    found = load_records(tmp_path / "res")
    assert len(found.ok) == 4 and not found.failed and not found.invalid
    rec = found.ok[0]
    pred = read_predictions(rec)
    fold = make_folds(toy_dataset.index, "batch_out")[rec.fold]
    assert sorted(pred.filter(pl.col("part") == "out_of_domain")["image_id"].to_list()) == sorted(
        toy_dataset.index[fold.target_ids].filter(~pl.col("is_control"))["image_id"].to_list())
    assert sorted(pred.filter(pl.col("part") == "in_domain")["image_id"].to_list()) == sorted(fold.in_domain_ids)
    # labels in the table are the dataset's, and the recorded accuracy is recomputable from them
    assert (pred["label"].to_numpy() == toy_dataset.labels[pred["image_id"].to_numpy()]).all()
    ood = pred.filter(pl.col("part") == "out_of_domain")
    assert rec.data["metrics"]["out_of_domain"]["accuracy"] == pytest.approx(
        float((ood["label"] == ood["predicted"]).mean()))
    probs = pred.select([c for c in pred.columns if c.startswith("prob_")]).to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    # DMSO standardisation undoes the toy's per-source gain/offset: only correct un-shuffling gives 1.0
    assert rec.data["metrics"]["out_of_domain"]["accuracy"] == 1.0
    assert {p["part"] for p in rec.data["metrics"]["per_plate"]} == {"out_of_domain", "in_domain"}
    for key in ("fit_s", "adapt_predict_s", "evaluate_s", "total_s"):
        assert rec.data["timings"][key] >= 0
    assert rec.data["fit_report"]["n_train"] > 0
    assert rec.data["split"]["held_out_kind"] == "batch" and rec.data["split"]["n_folds"] == 5
    assert rec.data["method"]["access"] == "controls" and rec.data["device"] == "cpu"


def test_method_views_are_cut_to_the_access_level(toy_dataset):
    fold = make_folds(toy_dataset.index, "source_out")[0]
    ctrl = fit_and_evaluate(ControlStd(), toy_dataset, fold, seed=0)
    plate = PlateStd()
    fit_and_evaluate(plate, toy_dataset, fold, seed=0)
    m = ControlStd()
    fit_and_evaluate(m, toy_dataset, fold, seed=0)
    assert m.seen_ == (0, 32)        # controls: DMSO images only, no treated images in adapt
    assert plate.seen_[1] == 32 and plate.seen_[0] > 0   # unlabeled: treated + DMSO
    assert ctrl.predictions["part"].n_unique() == 2


def test_centroid_without_target_access_shows_a_domain_gap(toy_dataset, tmp_path):
    (o,) = run(toy_dataset, tmp_path, "_test_centroid")
    (a,) = run(toy_dataset, tmp_path, "_test_plate_std")
    assert o.out_of_domain_accuracy < 0.6 < a.out_of_domain_accuracy


def test_same_seed_gives_identical_predictions(toy_dataset):
    fold = make_folds(toy_dataset.index, "source_out")[1]
    a = fit_and_evaluate(Centroid(), toy_dataset, fold, seed=0).predictions
    b = fit_and_evaluate(Centroid(), toy_dataset, fold, seed=0).predictions
    assert a.equals(b)


@pytest.mark.parametrize("method, message", [
    ("_test_fail_fit", "fit raised RuntimeError: boom in fit"),
    ("_test_fail_adapt", "adapt on plate src0_b0_p0 raised ValueError: cannot adapt to src0_b0_p0"),
    ("_test_nan_loss", "fit: training loss became NaN at epoch 2; lower the learning rate"),
    ("_test_nan_predict", "predict() on plate src0_b0_p0 returned 256 non-finite values (NaN or inf)"),
    ("_test_logits", "returned negative probabilities; apply a softmax"),
    ("_test_wrong_shape", "returned shape (32, 7); expected (32, 8)"),
])
def test_a_failing_method_writes_a_failed_record(toy_dataset, tmp_path, method, message):
    (o,) = run(toy_dataset, tmp_path, method)
    assert o.status == "failed" and message in o.error
    found = load_records(tmp_path / "res")
    assert not found.ok and len(found.failed) == 1
    data = found.failed[0].data
    assert data["status"] == "failed" and message in data["error"] and data["predictions"] is None
    assert (data["traceback"] is not None) == (method in ("_test_fail_fit", "_test_fail_adapt"))


def test_other_runs_go_on_after_a_failure(toy_dataset, tmp_path):
    out = run(toy_dataset, tmp_path, "_test_seed_fail", seeds=[0, 1, 2])
    assert [o.status for o in out] == ["ok", "failed", "ok"]


def test_resume_skips_done_runs_recomputes_on_change_and_force(toy_dataset, tmp_path):
    first = run(toy_dataset, tmp_path, "_test_centroid", seeds=[0, 1])
    assert [o.status for o in first] == ["ok", "ok"]
    mtime = first[0].path.stat().st_mtime_ns
    lines = []
    again = run(toy_dataset, tmp_path, "_test_centroid", seeds=[0, 1, 2], log=lines.append)
    assert [o.status for o in again] == ["skipped", "skipped", "ok"]
    assert first[0].path.stat().st_mtime_ns == mtime
    assert any("skipped, already recorded" in line for line in lines)
    lines.clear()
    changed = run(toy_dataset, tmp_path, "_test_centroid", overrides={"temperature": "2"}, log=lines.append)
    assert changed[0].status == "ok" and any("recomputing (config changed)" in line for line in lines)
    assert load_records(tmp_path / "res").ok[0].data["method"]["config"]["temperature"] == 2.0
    forced = run(toy_dataset, tmp_path, "_test_centroid", overrides={"temperature": "2"}, force=True)
    assert forced[0].status == "ok"


def test_a_record_of_the_shipped_encoder_is_recomputed_when_its_weights_change(toy_dataset, tmp_path, monkeypatch):
    import benchmark.core.encoders.loading as encoders

    (first,) = run(toy_dataset, tmp_path, "fm_tvn", quick=True)
    recorded = load_records(tmp_path / "res").quick[0].data["fit_report"]["encoder_weights_sha256"]
    assert first.status == "ok" and recorded == encoders.shipped_weights_digest()
    assert run(toy_dataset, tmp_path, "fm_tvn", quick=True)[0].status == "skipped"
    monkeypatch.setattr(encoders, "shipped_weights_digest", lambda: "0" * 64)  # a new encoder was shipped
    data = load_records(tmp_path / "res").quick[0].data  # the run itself is not repeated: the decision is the point
    current, why, _ = record_is_current(first.path, data["method"]["config"], data["dataset"]["fingerprint"],
                                        data["split"]["split_seed"])
    assert (current, why) == (False, "the shipped encoder's weights changed")


def test_a_failed_record_is_retried(toy_dataset, tmp_path, monkeypatch):
    (o,) = run(toy_dataset, tmp_path, "_test_flaky")
    assert o.status == "failed" and "flaky failure" in o.error
    monkeypatch.setenv("PLATEBENCH_TEST_FLAKY_FIXED", "1")
    lines = []
    (again,) = run(toy_dataset, tmp_path, "_test_flaky", log=lines.append)
    assert again.status == "ok" and any("recomputing (previous run failed)" in line for line in lines)
    found = load_records(tmp_path / "res")
    assert len(found.ok) == 1 and not found.failed


def test_quick_profile_uses_quick_overrides_and_its_own_record(toy_dataset, tmp_path):
    (full,) = run(toy_dataset, tmp_path, "_test_centroid")
    (quick,) = run(toy_dataset, tmp_path, "_test_centroid", quick=True)
    assert quick.status == "ok" and quick.path.name == "fold0_seed0.quick.json" and full.path.exists()
    found = load_records(tmp_path / "res")
    assert len(found.ok) == 1 and len(found.quick) == 1
    assert found.quick[0].data["profile"] == "quick" and found.quick[0].data["method"]["config"]["epochs"] == 1


def test_plate_without_dmso_is_a_clear_error_naming_the_plate(toy_dataset, tmp_path):
    root = tmp_path / "nodmso"
    shutil.copytree(toy_dataset.root, root)
    index = toy_dataset.index.filter(~((pl.col("plate") == "src0_b1_p1") & pl.col("is_control")))
    index = index.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("image_id"))
    write_dataset(root, "toy-nodmso", "test", {"no_dmso": "src0_b1_p1"}, index, toy_dataset.meta.shards)
    ds = open_dataset(root)
    (o,) = run(ds, tmp_path, "_test_ctrl_std")
    assert o.status == "failed"
    assert ("plate src0_b1_p1 has no DMSO images, but method '_test_ctrl_std' (access controls) needs each "
            "evaluated plate's DMSO controls") in o.error
    (ok,) = run(ds, tmp_path, "_test_centroid")  # access none needs no controls
    assert ok.status == "ok"


def test_check_probabilities_accepts_probabilities_and_explains_rejections():
    p = np.full((3, 8), 1 / 8)
    assert check_probabilities(p, 3, 8, "m", "P1").shape == (3, 8)
    with pytest.raises(MethodError, match="method 'm' predict\\(\\) on plate P1 returned rows that sum to 1 ± 1"):
        check_probabilities(2 * p, 3, 8, "m", "P1")
    with pytest.raises(MethodError, match="returned shape \\(2, 8\\); expected \\(3, 8\\)"):
        check_probabilities(p[:2], 3, 8, "m", "P1")
    with pytest.raises(MethodError, match="returned str, not an array"):
        check_probabilities("abc", 3, 8, "m", "P1")


def test_unknown_names_list_the_valid_ones(toy_dataset, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown method 'ermm'. Valid methods: .*erm.*Did you mean 'erm'"):
        run(toy_dataset, tmp_path, "ermm")
    with pytest.raises(UnknownNameError, match="unknown split 'source'. Valid splits: batch_out, source_out"):
        run(toy_dataset, tmp_path, "_test_centroid", split="source")
    with pytest.raises(BenchError, match="fold\\(s\\) 9 do not exist for split source_out; valid folds: 0, 1, 2, 3"):
        select_folds(make_folds(toy_dataset.index, "source_out"), [0, 9])


def test_config_resolution_and_overrides():
    assert resolve_config(Centroid).epochs == 10
    assert resolve_config(Centroid, quick=True).epochs == 1
    assert resolve_config(Centroid, {"epochs": "4"}, quick=True).epochs == 4  # --set wins over quick
    assert parse_overrides(["epochs=3", " temperature = 0.5"]) == {"epochs": "3", "temperature": "0.5"}
    with pytest.raises(BenchError, match="--set expects key=value, got 'epochs'"):
        parse_overrides(["epochs"])
    with pytest.raises(BenchError, match="unknown hyper-parameter\\(s\\) lr for CentroidConfig; valid: temperature"):
        resolve_config(Centroid, {"lr": "1"})


def test_device_selection(monkeypatch):
    import torch

    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(BenchError, match="--device cuda was asked for but torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(BenchError, match="unknown device 'tpu'. Valid devices: auto, cpu, cuda"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
