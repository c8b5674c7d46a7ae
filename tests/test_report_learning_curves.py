"""Learning curves (scripts/learning_curves.py): scored every epoch, watching only, resumable."""

from __future__ import annotations

import json

import pytest

from benchmark.errors import BenchError
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.methods.erm import ERM, ERMConfig
from benchmark.report.learning_curves import CurveSpec, curves_figure, load_curves, run_curve, summary_table
from benchmark.splits import make_folds

SMALL = {"crop": 12, "max_epochs": 3, "patience": 3, "schedule": "plateau", "augment": "dihedral"}


@pytest.fixture(scope="module")
def fold(toy_dataset):
    return make_folds(toy_dataset.index, "source_out", 0)[0]


def test_a_curve_scores_every_epoch_and_its_selected_epoch_is_the_runs(toy_dataset, fold, tmp_path):
    path = run_curve(CurveSpec("erm", "source_out", 0, 0, SMALL, "t"), toy_dataset, fold, tmp_path)
    data = json.loads(path.read_text())
    assert [row["epoch"] for row in data["epochs"]] == [1, 2, 3]
    for row in data["epochs"]:
        assert 0 <= row["in_domain"] <= 1 and 0 <= row["out_of_domain"] <= 1 and row["val_loss"] > 0
    best = data["selected"]["best_epoch"]
    assert data["epochs"][best - 1]["val_loss"] == min(r["val_loss"] for r in data["epochs"])
    # the selected network is the best epoch's: its scores are the curve's at that epoch
    assert data["selected"]["out_of_domain"] == pytest.approx(data["epochs"][best - 1]["out_of_domain"])


def test_scoring_every_epoch_changes_nothing_of_the_training(toy_dataset, fold, tmp_path):
    """The curve only watches: the same run without the hook gives the same predictions, bit for bit."""
    path = run_curve(CurveSpec("erm", "source_out", 0, 1, SMALL, "w"), toy_dataset, fold, tmp_path)
    plain = fit_and_evaluate(ERM(ERMConfig(**SMALL)), toy_dataset, fold, 1)
    data = json.loads(path.read_text())
    assert data["selected"]["out_of_domain"] == plain.metrics["out_of_domain"]["accuracy"]
    assert [r["val_loss"] for r in data["epochs"]] == plain.fit_report["val_loss"]


def test_an_existing_curve_is_kept_and_the_table_and_figure_come_from_the_files(toy_dataset, fold, tmp_path):
    spec = CurveSpec("erm", "source_out", 0, 0, {**SMALL, "max_epochs": 1}, "r")
    path = run_curve(spec, toy_dataset, fold, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert run_curve(spec, toy_dataset, fold, tmp_path) == path and path.stat().st_mtime_ns == stamp
    curves = load_curves(tmp_path)
    table = summary_table(curves)
    assert table[2].startswith("| erm | source_out | r | 1 | 1.0 | 1.0 |")
    assert curves_figure(curves, tmp_path / "fig.png").stat().st_size > 1000


def test_curves_need_a_resnet_method_and_files(toy_dataset, fold, tmp_path):
    with pytest.raises(BenchError, match="trains no network epoch by epoch"):
        run_curve(CurveSpec("intensity_stats", "source_out", 0, 0, {}, "x"), toy_dataset, fold, tmp_path)
    with pytest.raises(BenchError, match="no learning-curve files under"):
        load_curves(tmp_path)
