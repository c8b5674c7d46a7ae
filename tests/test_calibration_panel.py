"""The probe panel (`bench data calibrate`): targets at their bounds, errors kept per probe, the CLI end to end
on a small toy dataset with the methods' smoke settings, and reuse of what a first run computed."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from typer.testing import CliRunner

from _check_env import check_cache  # noqa: F401  (autouse fixture: a temporary PLATEBENCH_CACHE)
from conftest import make_toy_dataset
from benchmark.calibration import PROBES, Target, select_probes
from benchmark.calibration.inputs import Inputs
from benchmark.datasets.synthetic.twin import severity_twin
from benchmark.calibration.panel import run_panel
from benchmark.calibration.settings import PanelSettings
from benchmark.cli import app
from benchmark.datasets.dataset import Dataset
from benchmark.errors import BenchError, UnknownNameError
from benchmark.records import iter_record_files, load_records

runner = CliRunner()
# every sealed record probe and one of each other kind, ERM and ARM-BN for the label-shift cut
E2E_PROBES = ("erm_in_domain", "erm_batch_gap", "erm_source_gap", "lab_severity1", "lab_severity0",
              "label_shift_erm", "label_shift_arm_bn")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """3 sources x 2 batches x 1 plate of 40 px images: the ResNets' default 40 px crop fits."""
    return make_toy_dataset(tmp_path_factory.mktemp("toy40"), n_sources=3, n_batches=2, n_plates=1, size=40)


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- targets and the table

def test_a_range_includes_its_bounds_and_nothing_beyond():
    t = Target(0.90, 0.96)
    assert t.passes(0.90) and t.passes(0.96) and t.passes(0.93)
    assert not t.passes(0.8999) and not t.passes(0.9601) and not t.passes(math.nan)
    assert Target(low=0.10).passes(0.96 - 0.86)  # 0.0999999... : float rounding of a difference meets the bound
    assert Target(low=0.70).passes(5.0) and not Target(low=0.70).passes(0.69)
    assert Target(high=0.05).passes(-0.3) and Target(high=0.05).passes(0.05) and not Target(high=0.05).passes(0.051)
    assert Target(-0.02, 0.02).passes(-0.02) and not Target(-0.02, 0.02).passes(0.021)


def test_targets_read_as_the_issue_writes_them():
    assert Target(0.90, 0.96).text() == "0.90 – 0.96"
    assert Target(low=0.70).text("share") == "≥ 70 %"
    assert Target(high=0.05).text("difference") == "≤ 0.05"
    assert Target(-0.02, 0.02).text("difference") == "within ± 0.02"


def test_the_table_has_the_issues_probes_and_unknown_names_list_the_valid_ones():
    names = [p.name for p in PROBES]
    assert len(names) == len(set(names)) == 15
    assert [p.name for p in select_probes(["lab_severity0", "erm_in_domain"])] == ["erm_in_domain", "lab_severity0"]
    with pytest.raises(UnknownNameError, match=r"unknown probe 'erm_in_domian'.*Did you mean 'erm_in_domain'"):
        select_probes(["erm_in_domian"])


def test_a_failed_input_is_computed_once_and_raised_to_every_probe_that_needs_it(small):
    inputs, calls = Inputs(small), []

    def fails():
        calls.append(1)
        raise BenchError("no records")

    for _ in range(2):
        with pytest.raises(BenchError, match="no records"):
            inputs._once("x", fails)
    assert calls == [1]


def test_a_probe_that_fails_is_its_row_and_the_others_are_measured(small, tmp_path):
    result = run_panel(small, PanelSettings(quick=True, smoke=True, device="cpu", results_dir=tmp_path),
                       ["lab_severity0", "lab_severity1"])
    zero, one = sorted(result.rows, key=lambda r: r.probe.name)
    assert zero.measured is None and zero.passed is None
    assert "has no severity setting; severity twins exist for the synthetic simulator only" in zero.error
    assert one.error is None and 0 <= one.measured <= 1 and one.passed is (one.measured >= 0.95)


def test_the_severity_twin_of_an_older_simulator_is_refused_with_the_versions(small):
    meta = dataclasses.replace(small.meta, name="synthetic",
                               settings={**small.meta.settings, "severity": 1.0, "simulator_version": "sim-0"})
    old = Dataset(small.root, meta, small.index, small.store)
    with pytest.raises(BenchError, match=r"made by simulator sim-0, this installation has sim-"):
        severity_twin(old, 0.0)


# ----------------------------------------------------------------------------- the CLI end to end

def _check_panel(panel: dict, names: tuple[str, ...]) -> None:
    assert {"dataset", "profile", "results_dir", "probes", "summary", "fits", "wall_s"} <= set(panel)
    assert panel["profile"]["quick"] and panel["profile"]["seeds"] == [0] and panel["profile"]["folds"] == [0]
    assert [p["name"] for p in panel["probes"]] == [p.name for p in select_probes(list(names))]
    for row in panel["probes"]:
        assert {"name", "title", "unit", "target", "measured", "passed", "detail", "error"} <= set(row)
        assert {"low", "high", "text"} <= set(row["target"])
        if row["error"] is not None:
            assert row["measured"] is None and row["passed"] is None and row["error"]
            continue
        assert isinstance(row["measured"], float) and math.isfinite(row["measured"]), row
        low = 0 if row["unit"] == "accuracy" else -1
        assert low <= row["measured"] <= 1, row
        # a finding (no target) is reported, never passed or failed
        assert row["passed"] is None if row["reported"] else isinstance(row["passed"], bool), row
    errors = sum(p["error"] is not None for p in panel["probes"])
    assert panel["summary"] == {"passed": sum(p["passed"] is True for p in panel["probes"]),
                                "failed": sum(p["passed"] is False for p in panel["probes"]),
                                "reported": sum(p["reported"] and p["error"] is None for p in panel["probes"]),
                                "errors": errors}


def test_the_panel_end_to_end_then_a_rerun_reuses_every_fit(small, tmp_path):
    args = ["data", "calibrate", "--dataset", small.root, "--quick", "--smoke", "--json", "--device", "cpu",
            "--results", tmp_path / "res", *[a for name in E2E_PROBES for a in ("--probe", name)]]
    first = bench(*args)
    assert first.exit_code == 0, first.output
    panel = json.loads(first.stdout)
    _check_panel(panel, E2E_PROBES)
    by_name = {p["name"]: p for p in panel["probes"]}
    assert "no severity setting" in by_name["lab_severity0"]["error"]  # the toy dataset has no severity knob
    assert all(by_name[n]["error"] is None for n in E2E_PROBES if n != "lab_severity0")
    # ERM's records are ordinary smoke-profile run records: both splits, fold 0, seed 0
    found = load_records(tmp_path / "res")
    assert sorted((r.method, r.split, r.fold, r.seed) for r in found.quick) == [
        ("erm", "batch_out", 0, 0), ("erm", "source_out", 0, 0)]
    assert panel["fits"] == {"records_ok": 2, "records_skipped": 0, "records_failed": 0,
                             "label_shift_fitted": 2, "label_shift_reused": 0}
    # the label-shift cut is the same for ERM and ARM-BN
    kept = {f.name.split("_fold")[0]: json.loads(f.read_text())["scores"]["classes"]
            for f in (tmp_path / "res").rglob("label_shift_*.json")}
    assert set(kept) == {"label_shift_erm", "label_shift_arm_bn"}
    assert kept["label_shift_erm"] == kept["label_shift_arm_bn"]
    assert all(len(c) == 2 for c in kept["label_shift_erm"].values())
    files = sorted(p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*.json"))

    again = bench(*args)
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["fits"] == {"records_ok": 0, "records_skipped": 2, "records_failed": 0,
                             "label_shift_fitted": 0, "label_shift_reused": 2}
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*.json")) == files  # nothing rewritten
    assert [p["measured"] for p in rerun["probes"]] == [p["measured"] for p in panel["probes"]]
    assert len(list(iter_record_files(tmp_path / "res"))) == 2  # the label-shift files are not run records


def test_markdown_output_is_the_data_card_table(small, tmp_path):
    r = bench("data", "calibrate", "--dataset", small.root, "--markdown", "-q", "--results", tmp_path,
              "--probe", "lab_severity1", "--probe", "lab_severity0")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[:2] == ["| probe | measured | target | pass | from |", "|---|---|---|---|---|"]
    assert lines[2].startswith("| lab from per-image channel statistics (linear), this dataset | ")
    assert lines[3].startswith("| lab from channel statistics at severity 0: accuracy − chance | error: ")
    assert "`bench data calibrate` on toy test, fingerprint " in r.stdout
    assert "1 of 2 probes could not be measured (first: lab_severity0: " in r.stderr


def test_a_bad_dataset_name_is_one_line_with_the_choices(tmp_path):
    r = bench("data", "calibrate", "--dataset", "synthetc", "--results", tmp_path)
    assert r.exit_code == 1
    assert r.stderr.strip().count("\n") == 0
    assert "unknown dataset 'synthetc'" in r.stderr and "Did you mean 'synthetic'" in r.stderr


def test_a_bad_probe_name_fails_before_any_work(tmp_path):
    r = bench("data", "calibrate", "--dataset", "synthetc", "--probe", "lab", "--results", tmp_path)
    assert r.exit_code == 1 and "unknown probe 'lab'. Valid probes: " in r.stderr
    assert not any(tmp_path.iterdir())
