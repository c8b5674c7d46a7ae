"""The probes re-based on the reference study (issue 26): each new probe measured on fake inputs and fake run
records, findings with no target never counted as misses, and the Dirichlet α = 0.01 accessor reading the right
level of the right split's records (which the panel's runs are asked to score)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from benchmark.calibration import PROBES, Target, select_probes
from benchmark.calibration.inputs import (SCENARIO_RUNS, SPLIT_ORDER, Inputs, MethodAccuracies, ScenarioAccuracy,
                                          level_accuracy)
from benchmark.calibration.panel import PanelResult, ProbeResult, run_panel
from benchmark.calibration.settings import PanelSettings
from benchmark.calibration.writeup import markdown_table, summary_line, tally, verdict
from benchmark.errors import BenchError

BY_NAME = {p.name: p for p in PROBES}


class FakeInputs:
    """Accuracies and scenario accuracies given as numbers; records which scenario levels were asked for."""

    def __init__(self, acc: dict[str, tuple[float, float, float]], shift: dict[str, float] | None = None):
        self.acc, self.shift, self.asked = acc, shift or {}, []

    def accuracies(self, method: str) -> MethodAccuracies:
        ind, batch, source = self.acc[method]
        return MethodAccuracies(method, ind, {"batch_out": batch, "source_out": source}, 6)

    def scenario_accuracy(self, method, scenario, level, split="batch_out") -> ScenarioAccuracy:
        self.asked.append((method, scenario, level, split))
        return ScenarioAccuracy(method, split, scenario, level, self.shift[method], 15)


# in-domain, batch_out, source_out: ERM drops 0.08 to new batches, 0.20 to new labs
ACC = {"erm": (0.94, 0.86, 0.74), "adabn": (0.93, 0.90, 0.80), "arm_bn": (0.94, 0.92, 0.85),
       "cs_arm_bn": (0.93, 0.91, 0.90), "intensity_stats": (0.88, 0.70, 0.60), "cell_count": (0.99, 0.5, 0.4)}


# ----------------------------------------------------------------------------- the table

def test_the_rebased_probes_have_the_studys_targets():
    assert BY_NAME["erm_in_domain"].target == Target(0.90, 0.96)
    assert BY_NAME["erm_batch_gap"].target == Target(0.04, 0.12) and "0.077" in BY_NAME["erm_batch_gap"].reference
    assert BY_NAME["bn_batch_recovery"].target == Target(low=0.70) and BY_NAME["bn_batch_recovery"].unit == "share"
    assert BY_NAME["bn_source_recovery"].target == Target(low=0.70)
    assert BY_NAME["label_shift_a001_cs_arm_bn"].target == Target(low=0.80)
    assert BY_NAME["label_shift_a001_cs_arm_bn"].reference == "0.894"
    assert BY_NAME["label_shift_a001_arm_bn"].target == Target(high=0.40)
    assert BY_NAME["label_shift_a001_arm_bn"].reference == "0.228"
    findings = [p.name for p in PROBES if p.reported]
    assert findings == ["intensity_margin", "cell_count_margin"]


def test_no_target_reads_any_and_no_value_misses_it():
    t = Target()
    assert not t.bounded and t.text("difference") == "any"
    assert t.passes(-0.5) and t.passes(0.0) and t.passes(3.0)
    assert Target(low=0.7).bounded and Target(high=0.4).bounded and Target(0.9, 0.96).bounded


# ----------------------------------------------------------------------------- measurements on fake inputs

def test_batch_recovery_is_the_best_bn_methods_share_of_erms_drop():
    m = BY_NAME["bn_batch_recovery"].measure(FakeInputs(ACC))
    assert m.value == pytest.approx((0.92 - 0.86) / (0.94 - 0.86))  # ARM-BN is best on batch_out: 75 %
    assert m.detail.startswith("arm_bn batch_out 0.920")
    assert BY_NAME["bn_batch_recovery"].target.passes(m.value)
    worse = {**ACC, "arm_bn": (0.94, 0.87, 0.85), "cs_arm_bn": (0.93, 0.87, 0.90), "adabn": (0.93, 0.88, 0.8)}
    m = BY_NAME["bn_batch_recovery"].measure(FakeInputs(worse))
    assert m.value == pytest.approx(0.25) and not BY_NAME["bn_batch_recovery"].target.passes(m.value)


def test_source_recovery_is_kept_and_picks_its_own_best_method():
    m = BY_NAME["bn_source_recovery"].measure(FakeInputs(ACC))
    assert m.value == pytest.approx((0.90 - 0.74) / (0.94 - 0.74)) and m.detail.startswith("cs_arm_bn source_out")


def test_recovery_without_a_drop_is_an_error_not_a_value():
    flat = {**ACC, "erm": (0.90, 0.91, 0.74)}
    with pytest.raises(BenchError, match="ERM has no batch_out gap to recover"):
        BY_NAME["bn_batch_recovery"].measure(FakeInputs(flat))


def test_the_alpha_001_probes_read_the_batch_out_label_shift_level():
    inputs = FakeInputs(ACC, {"cs_arm_bn": 0.85, "arm_bn": 0.52})
    cs = BY_NAME["label_shift_a001_cs_arm_bn"].measure(inputs)
    arm = BY_NAME["label_shift_a001_arm_bn"].measure(inputs)
    assert inputs.asked == [("cs_arm_bn", "label_shift", "0.01", "batch_out"),
                            ("arm_bn", "label_shift", "0.01", "batch_out")]
    assert cs.value == 0.85 and BY_NAME["label_shift_a001_cs_arm_bn"].target.passes(cs.value)
    assert arm.value == 0.52 and not BY_NAME["label_shift_a001_arm_bn"].target.passes(arm.value)
    assert "15 batch_out records" in cs.detail and "level 0.01" in cs.detail


@pytest.mark.parametrize(("name", "baseline"), [("intensity_margin", "intensity_stats"),
                                                ("cell_count_margin", "cell_count")])
def test_baseline_margins_are_erm_in_domain_minus_the_baselines(name, baseline):
    m = BY_NAME[name].measure(FakeInputs(ACC))
    assert m.value == pytest.approx(ACC["erm"][0] - ACC[baseline][0])
    assert f"{baseline} in-domain {ACC[baseline][0]:.3f}" in m.detail


# ----------------------------------------------------------------------------- findings in the write-up

def _result(rows: list[ProbeResult]) -> PanelResult:
    ds = SimpleNamespace(name="toy", meta=SimpleNamespace(version="v"), fingerprint="abc", root=".")
    counts = {k: 0 for k in ("records_ok", "records_skipped", "records_failed", "label_shift_fitted",
                             "label_shift_reused")}
    return PanelResult(ds, PanelSettings(quick=True), rows, counts, 1.0, "now")


def test_a_finding_is_reported_never_a_miss_even_far_from_erm():
    rows = [ProbeResult(BY_NAME["erm_in_domain"], 0.93), ProbeResult(BY_NAME["erm_batch_gap"], 0.30),
            ProbeResult(BY_NAME["intensity_margin"], -0.25), ProbeResult(BY_NAME["cell_count_margin"], 0.4),
            ProbeResult(BY_NAME["label_shift_a001_arm_bn"], error="no records")]
    assert [verdict(r) for r in rows] == ["pass", "FAIL", "reported", "reported", "–"]
    assert tally(rows) == {"pass": 1, "FAIL": 1, "reported": 2, "–": 1}
    result = _result(rows)
    assert summary_line(result) == "1 pass, 1 FAIL, 2 reported (no target), 1 not measured"
    table = markdown_table(result).splitlines()
    finding = next(line for line in table if line.startswith("| finding: ERM in-domain − intensity"))
    assert finding.split(" | ")[1:4] == ["-0.250", "any", "reported"]
    assert "1 pass, 1 FAIL, 2 reported (no target), 1 not measured." in table


def test_an_unmeasured_finding_is_not_reported():
    assert verdict(ProbeResult(BY_NAME["cell_count_margin"], error="cell_count failed")) == "–"


# ----------------------------------------------------------------------------- the α = 0.01 accessor

def _record(method: str, split: str, fold: int, accuracy: float, levels: dict | None = None) -> dict:
    record = {"record_format": 1, "status": "ok", "method": {"name": method}, "seed": 0,
              "split": {"name": split, "fold": fold},
              "metrics": {"in_domain": {"accuracy": 0.95}, "out_of_domain": {"accuracy": accuracy}}}
    if levels is not None:
        record["scenarios"] = {"label_shift": {"levels": {
            lv: {"level": lv, "status": "ok", "metrics": {"accuracy": a}} for lv, a in levels.items()}}}
    return record


def test_level_accuracy_is_the_mean_of_the_asked_level():
    records = [_record("cs_arm_bn", "batch_out", 0, 0.9, {"inf": 0.95, "0.1": 0.7, "0.01": 0.80}),
               _record("cs_arm_bn", "batch_out", 1, 0.9, {"inf": 0.93, "0.1": 0.6, "0.01": 0.90})]
    assert level_accuracy(records, "label_shift", "0.01") == pytest.approx(0.85)
    assert level_accuracy(records, "label_shift", "0.1") == pytest.approx(0.65)


def test_level_accuracy_names_the_record_that_lacks_it():
    good = _record("arm_bn", "batch_out", 0, 0.9, {"0.01": 0.2})
    with pytest.raises(BenchError, match="arm_bn batch_out fold 1 seed 0 has no label_shift scenario block"):
        level_accuracy([good, _record("arm_bn", "batch_out", 1, 0.9)], "label_shift", "0.01")
    with pytest.raises(BenchError, match=r"has no level 0.01 \(levels: inf\)"):
        level_accuracy([_record("arm_bn", "batch_out", 0, 0.9, {"inf": 0.9})], "label_shift", "0.01")
    failed = _record("arm_bn", "batch_out", 0, 0.9, {"0.01": 0.2})
    failed["scenarios"]["label_shift"]["levels"]["0.01"] = {"status": "failed", "error": "boom"}
    with pytest.raises(BenchError, match="did not score .failed: boom"):
        level_accuracy([failed], "label_shift", "0.01")
    with pytest.raises(BenchError, match="no records"):
        level_accuracy([], "label_shift", "0.01")


@pytest.fixture
def fake_protocol(monkeypatch, tmp_path):
    """``run_protocol`` replaced by one that writes two records per (method, split) and notes each call's scenarios:
    batch_out records score 0.01-level accuracy 0.8 + fold / 10, source_out ones 0.1 (a wrong split reads off)."""
    import benchmark.protocol.loop as loop

    asked = {}

    def run_protocol(method, split, dataset, *, scenarios=(), **_kw):
        asked.setdefault((method, split), []).append(tuple(scenarios))
        outcomes = []
        for fold in (0, 1):
            base = 0.1 if split == "source_out" else 0.8 + fold / 10
            levels = {"inf": 0.99, "0.1": 0.5, "0.01": base} if scenarios else None
            path = tmp_path / f"{method}_{split}_{fold}.json"
            path.write_text(json.dumps(_record(method, split, fold, 0.9 if split == "batch_out" else 0.8, levels)))
            outcomes.append(loop.RunOutcome(method, split, fold, 0, "ok", path))
        return outcomes

    monkeypatch.setattr(loop, "run_protocol", run_protocol)
    return asked


def test_the_panel_asks_label_shift_of_the_bn_runs_on_new_batches_only(fake_protocol, tmp_path):
    inputs = Inputs(SimpleNamespace(name="toy"), PanelSettings(quick=True, results_dir=tmp_path))
    found = inputs.scenario_accuracy("cs_arm_bn", "label_shift", "0.01")
    assert found.accuracy == pytest.approx(0.85) and found.n_records == 2 and found.split == "batch_out"
    assert inputs.accuracies("cs_arm_bn").out_of_domain == {"batch_out": 0.9, "source_out": 0.8}
    inputs.accuracies("erm")
    # each (method, split) asked once, shared by every probe that reads it
    assert fake_protocol == {("cs_arm_bn", "batch_out"): [("label_shift",)], ("cs_arm_bn", "source_out"): [()],
                             ("erm", "batch_out"): [()], ("erm", "source_out"): [()]}
    assert inputs.counts["records_ok"] == 8
    assert set(SCENARIO_RUNS) == {("arm_bn", "batch_out"), ("cs_arm_bn", "batch_out")}
    with pytest.raises(BenchError, match="erm batch_out runs do not score scenario label_shift"):
        inputs.scenario_accuracy("erm", "label_shift", "0.01")
    with pytest.raises(BenchError, match="cs_arm_bn source_out runs do not score"):
        inputs.scenario_accuracy("cs_arm_bn", "label_shift", "0.01", "source_out")


def test_the_new_rows_end_to_end_on_fake_records(fake_protocol, tmp_path):
    names = ["bn_batch_recovery", "label_shift_a001_cs_arm_bn", "label_shift_a001_arm_bn", "intensity_margin",
             "cell_count_margin"]
    result = run_panel(SimpleNamespace(name="toy"), PanelSettings(quick=True, results_dir=tmp_path), names)
    rows = {r.probe.name: r for r in result.rows}
    assert [r.probe.name for r in result.rows] == [p.name for p in select_probes(names)]
    assert all(r.error is None for r in result.rows), [r.error for r in result.rows]
    # every method scores the same here: ERM drops 0.95 → 0.9 on new batches and no BN method wins any back
    assert rows["bn_batch_recovery"].measured == pytest.approx(0.0) and verdict(rows["bn_batch_recovery"]) == "FAIL"
    assert rows["label_shift_a001_cs_arm_bn"].measured == pytest.approx(0.85)
    assert verdict(rows["label_shift_a001_cs_arm_bn"]) == "pass" and verdict(rows["label_shift_a001_arm_bn"]) == "FAIL"
    assert rows["intensity_margin"].measured == pytest.approx(0.0) and verdict(rows["intensity_margin"]) == "reported"
    assert tally(result.rows) == {"pass": 1, "FAIL": 2, "reported": 2}
    assert all(math.isfinite(r.measured) for r in result.rows)
    assert fake_protocol == {(m, s): [SCENARIO_RUNS.get((m, s), ())] for m in (
        "erm", "adabn", "arm_bn", "cs_arm_bn", "intensity_stats", "cell_count") for s in SPLIT_ORDER}
    assert fake_protocol[("arm_bn", "batch_out")] == [("label_shift",)]
