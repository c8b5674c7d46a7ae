"""The leaderboard's scenario sections: tables by level, paired Δ to the baseline, the figure, failed levels."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from test_leaderboard_build import fake

from benchmark.leaderboard.build import build_leaderboard
from benchmark.leaderboard.scenarios import level_value, paired_level_difference
from benchmark.records import load_records, write_record


def _block(name, levels, plain_level=None):
    return {"format": 1, "description": name, "plain_level": plain_level,
            "levels": {lv: {"level": lv, "status": "plain" if lv == plain_level else "ok", "seconds": 0.5,
                            "metrics": {"accuracy": acc, "balanced_accuracy": acc - 0.01}}
                       for lv, acc in levels.items()}}


def _with_scenarios(path, scenarios):
    data = json.loads(path.read_text())
    data["scenarios"] = scenarios
    write_record(path, data, pl.DataFrame({"image_id": np.arange(4)}))


@pytest.fixture
def results(tmp_path):
    """ERM and CS-ARM-BN on 2 folds × 2 seeds of both splits, with label_shift and support blocks."""
    root = tmp_path / "results"
    for split in ("source_out", "batch_out"):
        for fold in (0, 1):
            for seed in (0, 1):
                base = 0.5 + 0.1 * fold + 0.01 * seed
                for method, access, bonus in (("erm", "none", 0.0), ("cs_arm_bn", "unlabeled", 0.1)):
                    path = fake(root, method, split, fold, seed, base + bonus, 0.9, access=access,
                                fit_report={"train_seconds": 10.0})
                    shift = {"inf": base + bonus, "1": base + bonus - 0.05, "0.1": base + bonus / 2 - 0.1,
                             "0.01": base - 0.2 * (access != "none")}
                    support = {"all": base + bonus, "32": base + bonus - 0.02, "8": base + bonus - 0.1}
                    _with_scenarios(path, {"label_shift": _block("label shift", shift),
                                           "support": _block("support", support, "all")})
    return root


def test_sections_tables_and_figure(results, tmp_path):
    md = tmp_path / "LB.md"
    result = build_leaderboard(results, md, baseline="erm")
    text = md.read_text()
    assert "### Scenario `label_shift`" in text and "### Scenario `support`" in text
    assert "### Scenario `controls`" not in text  # no record holds it
    assert "| method | access | α = inf | α = 1 | α = 0.1 | α = 0.01 | runs |" in text
    assert "**leave-source-out, balanced accuracy**" in text
    assert "**leave-batch-out, Δ accuracy vs `erm`** [95% CI]" in text
    assert "Level `all` is the plain evaluation" in text
    support = text[text.index("### Scenario `support`"):]
    assert "| `erm` | 2 | 0.50 | 5.0 % |" in support  # 2 scored levels (32, 8): 0.5 s of 10 s training
    figures = [f for f in result.figures if f.name.startswith("scenario_")]
    assert len(figures) == 2 and all(f.exists() and f.stat().st_size > 1000 for f in figures)


def test_the_plain_level_equals_the_main_tables_number_and_deltas_pair_runs(results):
    records = load_records(results).ok
    for r in records:
        assert level_value(r, "support", "all") == r.data["metrics"]["out_of_domain"]["accuracy"]
    mean, lo, hi, n = paired_level_difference(records, "cs_arm_bn", "source_out", "support", "8", "erm")
    by_hand = np.mean([level_value(a, "support", "8") - level_value(b, "support", "8")
                       for a in records for b in records
                       if a.method == "cs_arm_bn" and b.method == "erm"
                       and a.split == b.split == "source_out" and (a.fold, a.seed) == (b.fold, b.seed)])
    assert n == 4 and mean == pytest.approx(by_hand) == pytest.approx(0.1) and lo <= mean <= hi


def test_failed_levels_are_listed_with_the_message(results, tmp_path):
    (rec,) = [r for r in load_records(results).ok if r.method == "cs_arm_bn" and r.split == "source_out"
              and r.fold == 0 and r.seed == 0]
    data = json.loads(rec.path.read_text())
    data["scenarios"]["support"]["levels"]["8"] = {"level": "8", "status": "failed", "error": "adapt raised X"}
    copy = tmp_path / "res"
    import shutil

    shutil.copytree(results, copy)
    write_record(copy / rec.path.relative_to(results), data, pl.DataFrame({"image_id": np.arange(4)}))
    md = tmp_path / "LB.md"
    build_leaderboard(copy, md, baseline="erm", figures=False)
    text = md.read_text()
    assert "- `cs_arm_bn` at n = 8: 1 run(s), e.g. adapt raised X" in text
    assert "(3 runs)" in text  # the level's mean is over the runs that scored it


def test_transductive_rows_carry_the_note_that_their_fit_saw_the_plain_targets(tmp_path):
    from benchmark.leaderboard.scenarios import TRANSDUCTIVE_NOTE

    root = tmp_path / "results"
    for access, method in (("none", "erm"), ("transductive", "dann")):
        path = fake(root, method, "source_out", 0, 0, 0.7, 0.9, access=access, fit_report={"train_seconds": 10.0})
        _with_scenarios(path, {"severity": _block("severity", {"0": 0.3, "1": 0.7}, "1")})
    md = tmp_path / "LB.md"
    build_leaderboard(root, md, figures=False)
    assert TRANSDUCTIVE_NOTE in md.read_text()
    fake(root, "dann", "source_out", 0, 0, 0.7, 0.9, access="none", fit_report={"train_seconds": 10.0})
    _with_scenarios(root / "synthetic-fp1" / "dann" / "source_out" / "fold0_seed0.json",
                    {"severity": _block("severity", {"0": 0.3, "1": 0.7}, "1")})
    build_leaderboard(root, md, figures=False)
    assert TRANSDUCTIVE_NOTE not in md.read_text()

