"""Access ``none``: scenario levels re-selected from the plain predictions equal a re-run, and call nothing."""

from __future__ import annotations

import numpy as np
import pytest
from _scenario_helpers import CountingHost, OwnScenario, fitted_host, small_synthetic  # noqa: F401 (a fixture)

from benchmark.datasets.dataset import open_dataset
from benchmark.protocol.evaluation import evaluate
from benchmark.registry import get_method
from benchmark.scenarios import applicable
from benchmark.scenarios.base import PlateCase
from benchmark.scenarios.scoring import PlainPredictions, run_scenarios, target_plates
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("toy_methods")

TIMING = ("seconds", "share_of_fit", "reused_plain_predictions")
"""What a re-selected level may say differently from a re-run one: how long it took, and that it was re-selected."""


def untimed(blocks: dict) -> dict:
    """Scenario blocks without each level's timing and re-selection mark."""
    return {name: {**block, "levels": {level: {k: v for k, v in entry.items() if k not in TIMING}
                                       for level, entry in block["levels"].items()}}
            for name, block in blocks.items()}


def reuse_against_rerun(host: CountingHost, dataset, fold, scenarios) -> tuple[dict, dict, int, int]:
    """Scenario blocks of one fitted host as ``evaluate`` scores them (re-selecting where it may) and as a re-run
    without the plain predictions scores them, and the calls to the host each made for its scenarios."""
    host.calls = 0
    evaluate(host, dataset, fold, 0)
    plain_calls, host.calls = host.calls, 0
    result = evaluate(host, dataset, fold, 0, scenarios=scenarios)
    evaluate_calls, host.calls = host.calls - plain_calls, 0
    rerun = run_scenarios(host, dataset, fold, 0, 0, scenarios, result.metrics["out_of_domain"],
                          result.timings["fit_s"])
    return result.scenarios, rerun, evaluate_calls, host.calls


@pytest.fixture(scope="module")
def fold(toy_dataset):
    return make_folds(toy_dataset.index, "source_out", 0)[0]


def test_an_access_none_method_is_reselected_exactly_as_a_rerun_scores_it(toy_dataset, fold):
    host = fitted_host(get_method("_test_centroid")(), toy_dataset, fold)
    scenarios = applicable(toy_dataset)
    reused, rerun, reuse_calls, rerun_calls = reuse_against_rerun(host, toy_dataset, fold, scenarios)
    assert untimed(reused) == untimed(rerun) and reuse_calls == 0
    shift = reused["label_shift"]["levels"]
    assert all(entry["status"] == "ok" and entry["reused_plain_predictions"] for entry in shift.values())
    assert rerun_calls == sum(entry["n_calls"] for entry in shift.values())  # the re-run did call the host
    assert not any("reused_plain_predictions" in entry for entry in rerun["label_shift"]["levels"].values())


def test_reselection_maps_by_image_whatever_order_a_case_lists_them(toy_dataset):
    ids, probs = np.array([7, 3, 11, 5]), np.eye(4, 8)
    plain = PlainPredictions.of(toy_dataset, ids, probs)
    case = PlateCase("p", np.array([11, 7, 5]), np.empty(0, dtype=np.int64), toy_dataset)
    assert np.array_equal(plain.select(case), probs[[2, 0, 3]])
    unscored = PlateCase("p", np.array([7, 4]), case.control_ids, toy_dataset)
    beyond = PlateCase("p", np.array([12]), case.control_ids, toy_dataset)
    assert plain.select(unscored) is None and plain.select(beyond) is None
    other_pixels = PlateCase("p", case.treated_ids, case.control_ids, open_dataset(toy_dataset.root))
    assert plain.select(other_pixels) is None  # a twin (severity): other pixels, however alike the ids


class _Rendered(OwnScenario):
    """A severity-like scenario: every target plate again, its pixels read from another dataset object."""

    name, level, description = "rendered", "again", "the target plates read from another dataset object"

    def __init__(self, images):
        self.images = images

    def cases(self, dataset, level, plate, treated_ids, control_ids):
        return [PlateCase(plate, treated_ids, control_ids, self.images)]


def test_levels_on_other_pixels_and_methods_that_see_the_plate_are_run(toy_dataset, fold):
    host = fitted_host(get_method("_test_centroid")(), toy_dataset, fold)
    twin = _Rendered(open_dataset(toy_dataset.root))
    plain = evaluate(host, toy_dataset, fold, 0)
    probs = plain.predictions.filter(plain.predictions["part"] == "out_of_domain")
    reuse = PlainPredictions.of(toy_dataset, probs["image_id"].to_numpy(),
                                probs.select([c for c in probs.columns if c.startswith("prob_")]).to_numpy())
    host.calls = 0
    (level,) = run_scenarios(host, toy_dataset, fold, 0, 0, [twin], {}, 1.0, plain_predictions=reuse)["rendered"][
        "levels"].values()
    assert level["status"] == "ok" and "reused_plain_predictions" not in level
    assert host.calls == len(target_plates(toy_dataset, fold))
    controls = fitted_host(get_method("_test_ctrl_std")(), toy_dataset, fold)
    reused, rerun, reuse_calls, rerun_calls = reuse_against_rerun(controls, toy_dataset, fold, ("label_shift",))
    assert untimed(reused) == untimed(rerun) and reuse_calls == rerun_calls > 0  # access controls: run
    assert not any("reused_plain_predictions" in entry for entry in reused["label_shift"]["levels"].values())


# -- ERM on the simulator ------------------------------------------------------------------------------------------
def test_erm_is_reselected_exactly_as_a_rerun_scores_it(small_synthetic):
    fold = make_folds(small_synthetic.index, "source_out", 0)[0]
    erm = get_method("erm")
    host = fitted_host(erm(erm.Config(**{**erm.quick_overrides, "crop": 24})), small_synthetic, fold)
    scenarios = ("label_shift", "controls", "support")
    reused, rerun, reuse_calls, rerun_calls = reuse_against_rerun(host, small_synthetic, fold, scenarios)
    assert untimed(reused) == untimed(rerun) and reuse_calls == 0 < rerun_calls
    assert all(entry["reused_plain_predictions"] for entry in reused["label_shift"]["levels"].values())
    assert {entry["status"] for name in ("controls", "support")
            for entry in reused[name]["levels"].values()} == {"unchanged"}
