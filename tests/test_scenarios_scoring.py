"""Scenarios: what each level hands a method, seeded the same for every method, scored on one fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _scenario_helpers import OwnScenario, small_synthetic  # noqa: F401 (a fixture)
from _toy_methods import ControlStd

from benchmark.errors import BenchError, DataError
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records, read_record
from benchmark.registry import get_method
from benchmark.scenarios import SCENARIO_NAMES, get_scenario, parse_scenarios
from benchmark.scenarios.label_shift import allocate, proportions
from benchmark.scenarios.scoring import target_plates
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("toy_methods")


@pytest.fixture(scope="module")
def fold(toy_dataset):
    return make_folds(toy_dataset.index, "source_out", 0)[0]


@pytest.fixture(scope="module")
def plate(toy_dataset, fold):
    name, (treated, controls) = next(iter(target_plates(toy_dataset, fold).items()))
    return name, treated, controls


def labels_of(dataset, ids):
    return dataset.index[ids]["label"].to_numpy()


# -- label shift --------------------------------------------------------------------------------
def test_allocate_sums_to_n_and_follows_the_proportions():
    assert allocate(10, np.array([0.5, 0.5])).tolist() == [5, 5]
    assert allocate(7, np.array([0.6, 0.3, 0.1])).tolist() == [4, 2, 1]
    counts = allocate(48, np.random.default_rng(0).dirichlet(np.ones(8)))
    assert counts.sum() == 48 and (counts >= 0).all()


def test_dirichlet_proportions_concentrate_as_alpha_falls():
    rng = np.random.default_rng(0)
    assert np.allclose(proportions(float("inf"), 8, rng), 1 / 8)
    top = {a: np.mean([proportions(a, 8, rng).max() for _ in range(200)]) for a in (1.0, 0.1, 0.01)}
    assert top[1.0] < top[0.1] < top[0.01] and top[0.01] > 0.9


def test_label_shift_keeps_the_same_number_of_images_at_every_alpha_and_all_controls(toy_dataset, plate):
    name, treated, controls = plate
    shift = get_scenario("label_shift")
    rarest = np.unique(labels_of(toy_dataset, treated), return_counts=True)[1].min()
    for level in shift.levels:
        (case,) = shift.cases(toy_dataset, level, name, treated, controls)
        assert len(case.treated_ids) == rarest and set(case.treated_ids) <= set(treated)
        assert len(np.unique(case.treated_ids)) == rarest  # without replacement
        assert np.array_equal(case.control_ids, controls)
    (balanced,) = shift.cases(toy_dataset, "inf", name, treated, controls)
    counts = np.unique(labels_of(toy_dataset, balanced.treated_ids), return_counts=True)[1]
    assert counts.max() - counts.min() <= 1


def test_label_shift_is_seeded_by_plate_and_level_only(toy_dataset, plate):
    name, treated, controls = plate
    a = get_scenario("label_shift").cases(toy_dataset, "0.1", name, treated, controls)[0].treated_ids
    b = get_scenario("label_shift").cases(toy_dataset, "0.1", name, treated[::-1].copy(), controls)[0].treated_ids
    c = get_scenario("label_shift").cases(toy_dataset, "1", name, treated, controls)[0].treated_ids
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# -- controls and support -----------------------------------------------------------------------
def test_controls_levels_give_k_of_the_plates_dmso_images(toy_dataset, plate):
    name, treated, controls = plate
    scenario = get_scenario("controls")
    (full,) = scenario.cases(toy_dataset, "all", name, treated, controls)
    assert np.array_equal(full.control_ids, controls) and np.array_equal(full.treated_ids, treated)
    for level in ("8", "2"):
        (case,) = scenario.cases(toy_dataset, level, name, treated, controls)
        assert len(case.control_ids) == int(level) and set(case.control_ids) <= set(controls)
        assert np.array_equal(case.treated_ids, treated)
    (many,) = scenario.cases(toy_dataset, "32", name, treated, controls[:5])
    assert len(many.control_ids) == 5  # a plate with fewer keeps them all


def test_support_groups_partition_the_plate(toy_dataset, plate):
    name, treated, controls = plate
    cases = get_scenario("support").cases(toy_dataset, "8", name, treated, controls)
    assert all(len(c.treated_ids) <= 8 for c in cases) and sum(len(c.treated_ids) == 8 for c in cases) >= len(cases) - 1
    together = np.concatenate([c.treated_ids for c in cases])
    assert sorted(together.tolist()) == sorted(treated.tolist())
    assert all(np.array_equal(c.control_ids, controls) for c in cases)


def test_parse_scenarios_defaults_to_those_that_apply_and_explains_the_rest(toy_dataset):
    assert parse_scenarios(None, toy_dataset) == ("label_shift", "controls", "support")  # toy: not simulated
    assert parse_scenarios("none", toy_dataset) == ()
    assert parse_scenarios("support,label_shift", toy_dataset) == ("label_shift", "support")
    with pytest.raises(BenchError, match="unknown scenario 'labelshift'.*Did you mean 'label_shift'"):
        parse_scenarios("labelshift", toy_dataset)
    with pytest.raises(BenchError, match="scenario 'severity' cannot run on this dataset: dataset 'toy' is not"):
        parse_scenarios("severity", toy_dataset)


# -- scoring on one fit -------------------------------------------------------------------------
def test_blocks_of_a_method_that_sees_nothing_of_the_plate(toy_dataset, fold):
    method = get_method("_test_centroid")()
    result = fit_and_evaluate(method, toy_dataset, fold, 0, scenarios=("label_shift", "controls", "support"))
    plain = result.metrics["out_of_domain"]
    assert result.scenarios["controls"]["levels"]["8"]["status"] == "unchanged"
    assert result.scenarios["support"]["levels"]["8"]["metrics"] == plain
    shift = result.scenarios["label_shift"]["levels"]
    assert all(shift[lv]["status"] == "ok" and shift[lv]["reused_plain_predictions"] for lv in shift)
    assert shift["inf"]["metrics"]["n_images"] < plain["n_images"]
    assert shift["0.01"]["classes_per_plate"] < shift["inf"]["classes_per_plate"]
    json.dumps(result.scenarios, allow_nan=True)  # JSON-ready


def test_a_plate_statistics_method_is_scored_on_each_group_and_budget(toy_dataset, fold):
    method = get_method("_test_plate_std")()
    result = fit_and_evaluate(method, toy_dataset, fold, 0, scenarios=("controls", "support"))
    support = result.scenarios["support"]["levels"]
    assert support["all"]["status"] == "plain" and support["8"]["status"] == "ok"
    n_plates = result.metrics["out_of_domain"]["n_plates"]
    assert support["8"]["n_calls"] > n_plates and support["8"]["metrics"]["n_images"] == \
        result.metrics["out_of_domain"]["n_images"]
    assert result.scenarios["controls"]["levels"]["2"]["controls_per_call"] == {"min": 2, "max": 2}
    assert "scenarios_s" in result.timings and support["8"]["share_of_fit"] is not None


class FussyControls(ControlStd):
    """Declares that it needs 8 DMSO images and raises below 4 (a method's own refusal)."""

    name = "_test_fussy_controls"
    min_controls = 8

    def adapt(self, plate):
        if len(plate.controls) < 4:
            raise ValueError(f"only {len(plate.controls)} DMSO images")
        return super().adapt(plate)


def test_too_few_controls_fail_that_level_with_a_message_and_the_others_go_on(toy_dataset, fold):
    result = fit_and_evaluate(FussyControls(), toy_dataset, fold, 0, scenarios=("controls",))
    levels = result.scenarios["controls"]["levels"]
    assert levels["32"]["status"] == "ok" and levels["8"]["status"] == "ok"
    assert levels["2"]["status"] == "failed"
    assert "needs at least 8 DMSO images per plate (its min_controls); this level gives 2" in levels["2"]["error"]
    FussyControls.min_controls = 0
    try:
        again = fit_and_evaluate(FussyControls(), toy_dataset, fold, 0, scenarios=("controls",))
    finally:
        FussyControls.min_controls = 8
    assert "adapt on plate" in again.scenarios["controls"]["levels"]["2"]["error"]
    assert "only 2 DMSO images" in again.scenarios["controls"]["levels"]["2"]["error"]


def test_the_same_cut_reaches_every_method(toy_dataset, fold):
    """Two methods, two seeds: the label-shift level scores the same images (ids identical)."""
    blocks = [fit_and_evaluate(get_method(m)(), toy_dataset, fold, s, scenarios=("label_shift",)).scenarios
              for m, s in (("_test_centroid", 0), ("_test_plate_std", 1))]
    sizes = [b["label_shift"]["levels"]["0.1"]["metrics"]["n_images"] for b in blocks]
    assert sizes[0] == sizes[1]


# -- records: blocks added to existing records, never lost ----------------------------------------
def test_records_gain_missing_blocks_keep_old_ones_and_survive_a_failed_rerun(toy_dataset, tmp_path, monkeypatch):
    kw = dict(dataset=toy_dataset, seeds=[0], folds=[0], device="cpu", results_dir=tmp_path)
    (first,) = run_protocol("_test_plate_std", "source_out", scenarios="support", **kw)
    assert first.status == "ok" and set(read_record(first.path)["scenarios"]) == {"support"}
    (same,) = run_protocol("_test_plate_std", "source_out", scenarios="support", **kw)
    assert same.status == "skipped"
    (more,) = run_protocol("_test_plate_std", "source_out", scenarios="label_shift", **kw)
    assert more.status == "ok" and set(read_record(more.path)["scenarios"]) == {"label_shift", "support"}
    before = read_record(more.path)

    from benchmark.protocol import loop as protocol

    def broken(*args, **kwargs):
        raise DataError("the disk is on fire")
    monkeypatch.setattr(protocol, "evaluate", broken)
    (failed,) = run_protocol("_test_plate_std", "source_out", scenarios="controls", **kw)
    assert failed.status == "failed" and "existing ok record kept" in failed.error
    assert read_record(more.path) == before
    assert len(load_records(tmp_path).ok) == 1


def test_every_scenario_has_levels_a_description_and_a_plain_level_among_its_levels(toy_dataset):
    for name in SCENARIO_NAMES:
        scenario = get_scenario(name)
        assert scenario.name == name and scenario.levels and scenario.description
        if scenario.not_applicable(toy_dataset) is None:
            plain = scenario.plain_level(toy_dataset)
            assert plain is None or plain in scenario.levels


# -- severity (simulator only) ------------------------------------------------------------------
def test_severity_twins_hold_the_same_cells_and_only_the_microscope_changes(small_synthetic):
    severity = get_scenario("severity")
    assert severity.plain_level(small_synthetic) == "1"
    fold = make_folds(small_synthetic.index, "source_out", 0)[0]
    name, (treated, controls) = next(iter(target_plates(small_synthetic, fold).items()))
    (case,) = severity.cases(small_synthetic, "0", name, treated, controls)
    twin = case.images
    assert twin.fingerprint != small_synthetic.fingerprint and twin.meta.settings["severity"] == 0.0
    assert np.array_equal(case.treated_ids, treated)
    same_ids = small_synthetic.index["image_id"].to_numpy()[:4]
    assert not np.array_equal(twin.read(same_ids), small_synthetic.read(same_ids))
    again = get_scenario("severity").cases(small_synthetic, "0", name, treated, controls)[0].images
    assert again is twin  # opened once per process (opening verifies every shard's checksum)
    result = fit_and_evaluate(get_method("_test_plate_std")(), small_synthetic, fold, 0, scenarios=("severity",))
    levels = result.scenarios["severity"]["levels"]
    assert levels["1"]["status"] == "plain" and all(levels[lv]["status"] == "ok" for lv in ("0", "0.5", "2", "3"))


def test_a_twin_that_does_not_line_up_is_refused(small_synthetic, toy_dataset):
    from benchmark.datasets.synthetic.twin import check_aligned

    with pytest.raises(DataError, match="does not line up"):
        check_aligned(small_synthetic, toy_dataset)


def test_cli_scenarios_option_errors_name_the_scenario(toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from benchmark.cli import app

    base = ["run", "-m", "_test_centroid", "-s", "source_out", "--dataset", str(toy_dataset.root), "--results",
            str(tmp_path), "--device", "cpu", "--folds", "0", "--seeds", "0", "-q"]
    bad = CliRunner().invoke(app, [*base, "--scenarios", "suport"])
    assert bad.exit_code == 1 and "unknown scenario 'suport'" in bad.output and "Did you mean 'support'" in bad.output
    sim_only = CliRunner().invoke(app, [*base, "--scenarios", "severity"])
    assert sim_only.exit_code == 1 and "scenario 'severity' cannot run on this dataset" in sim_only.output
    ok = CliRunner().invoke(app, [*base, "--scenarios", "none"])
    assert ok.exit_code == 0, ok.output
    (record,) = tmp_path.rglob("fold0_seed0.json")
    assert json.loads(record.read_text())["scenarios"] == {}


class _FirstThree(OwnScenario):
    """An experiment's own scenario: the first 3 treated images of every plate, without its DMSO."""

    name, level, description = "first_three", "3", "the first 3 treated images of every plate"

    def cases(self, dataset, level, plate, treated_ids, control_ids):
        from benchmark.scenarios.base import PlateCase

        return [PlateCase(plate, np.sort(treated_ids)[:3], control_ids[:0], dataset)]


def test_a_scenario_object_runs_like_a_registered_one(toy_dataset, fold):
    from benchmark.protocol.evaluation import LocalHost
    from benchmark.scenarios.scoring import run_scenarios

    method = get_method("_test_centroid")()
    train, val = toy_dataset.labelled(toy_dataset.index[fold.train_ids]), toy_dataset.labelled(toy_dataset.index[fold.val_ids])
    method.fit(train, val, 0)
    blocks = run_scenarios(LocalHost(method, toy_dataset, fold, fitted=True), toy_dataset, fold, 0, 0, [_FirstThree()],
                           {}, 1.0)
    level = blocks["first_three"]["levels"]["3"]
    assert level["status"] == "ok" and level["n_calls"] == len(target_plates(toy_dataset, fold))
    assert level["metrics"]["n_images"] == 3 * level["n_calls"] and level["controls_per_call"]["max"] == 0
