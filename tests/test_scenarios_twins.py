"""Severity twins: rendered once, before the first run, with progress on stderr; every run reuses them."""

from __future__ import annotations

import json

import pytest
from _scenario_helpers import tiny_synthetic
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.datasets.synthetic.twin import twin_cached
from benchmark.scenarios import severity
from benchmark.scenarios.severity import prepare_twins, twin_levels
from benchmark.sealed.runs import SealedRuns

pytestmark = pytest.mark.usefixtures("toy_methods")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """The tiny simulator in a cache of its own: no twin rendered yet, none open in this process."""
    monkeypatch.setattr(severity, "_TWINS", {})
    with tiny_synthetic(tmp_path / "cache") as dataset:
        yield dataset


def all_cached(dataset) -> bool:
    return all(twin_cached(dataset, float(level)) for level in twin_levels(dataset))


def test_prepare_renders_what_is_missing_then_opens_and_then_says_nothing(fresh, monkeypatch):
    lines: list[str] = []
    assert twin_levels(fresh) == ("0", "0.5", "2", "3") and not all_cached(fresh)
    twins = prepare_twins(fresh, lines.append)
    assert all_cached(fresh) and sorted(twins) == ["0", "0.5", "2", "3"]
    assert lines[0].startswith("severity scenario: rendering 4 twin dataset(s) of synthetic (severity 0, 0.5, 2, 3; "
                               "4 plates")
    assert [line.split(" rendered in ")[0] for line in lines[1:]] == [
        f"severity twin {i}/4 (severity {lv})" for i, lv in enumerate(("0", "0.5", "2", "3"), 1)]
    assert "s left" in lines[1] and "all rendered in" in lines[-1]
    again: list[str] = []
    assert prepare_twins(fresh, again.append) == twins and again == []  # open in this process: silent
    monkeypatch.setattr(severity, "_TWINS", {})  # another process: opens the cached twins, renders nothing
    reopened: list[str] = []
    prepare_twins(fresh, reopened.append)
    assert len(reopened) == 1 and reopened[0].startswith("severity scenario: opened 4 cached twin dataset(s)")


def test_bench_run_renders_the_twins_before_its_first_run_once_for_every_run(fresh, tmp_path, monkeypatch):
    ready_at_store = []
    store = SealedRuns.store

    def watched_store(self, fold):  # called before each run's worker starts (and when it starts)
        ready_at_store.append(all_cached(fresh))
        return store(self, fold)

    monkeypatch.setattr(SealedRuns, "store", watched_store)
    result = CliRunner().invoke(app, ["run", "-m", "_test_plate_std", "-s", "source_out", "--dataset",
                                      str(fresh.root), "--results", str(tmp_path / "res"), "--device", "cpu",
                                      "--folds", "0", "--seeds", "0,1", "--scenarios", "severity"])
    assert result.exit_code == 0, result.output
    assert len(ready_at_store) >= 2 and all(ready_at_store)
    assert result.stderr.count("severity scenario:") == 1 and result.stderr.count("severity twin ") == 4
    assert result.output.index("severity twin 4/4") < result.output.index("fitting on")
    records = sorted((tmp_path / "res").rglob("fold0_seed*.json"))
    levels = [json.loads(r.read_text())["scenarios"]["severity"]["levels"] for r in records]
    assert len(levels) == 2 and all(lv["0"]["status"] == "ok" and lv["1"]["status"] == "plain" for lv in levels)


def test_bench_sweep_prepares_the_twins_in_its_own_process_before_any_unit(fresh, tmp_path):
    args = ["sweep", "--methods", "_test_plate_std", "--splits", "source_out", "--folds", "0", "--seeds", "0",
            "--dataset", str(fresh.root), "--results", str(tmp_path / "res"), "--logs", str(tmp_path / "logs"),
            "--device", "cpu", "--scenarios", "severity"]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and not all_cached(fresh) and "severity twin" not in dry.output
    result = CliRunner().invoke(app, [*args, "--executor", "debug"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "expected wall time: unknown" in out
    assert out.index("expected wall time") < out.index("severity twin 4/4") < out.index("fitting on")
    assert result.stderr.count("severity twin ") == 4 and "actual wall time: " in result.stdout
    (record,) = (tmp_path / "res").rglob("fold0_seed0.json")
    assert json.loads(record.read_text())["scenarios"]["severity"]["levels"]["3"]["status"] == "ok"
