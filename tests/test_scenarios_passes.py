"""Plate-context methods under scenarios: per plate case one adapt (the BN-statistics pass) and one predict (the
prediction pass), nothing more, and no call at all for a plain or unchanged level."""

from __future__ import annotations

import pytest
from _scenario_helpers import fitted_host, small_synthetic  # noqa: F401 (a fixture)

from benchmark.core.training.sampler import chunk_indices
from benchmark.registry import get_method
from benchmark.scenarios import get_scenario
from benchmark.scenarios.scoring import run_scenarios, target_plates
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("toy_methods")
SCENARIOS = ("label_shift", "controls", "support")


def expected_cases(dataset, fold, blocks) -> list[tuple[str, int, int]]:
    """(plate, treated, controls) of every case of every level that was run (status ok), in scoring order."""
    plates = target_plates(dataset, fold)
    out = []
    for name, block in blocks.items():
        scenario = get_scenario(name)
        for level, entry in block["levels"].items():
            if entry["status"] == "ok":
                out += [(c.plate, len(c.treated_ids), len(c.control_ids)) for plate, (t, k) in plates.items()
                        for c in scenario.cases(dataset, level, plate, t, k)]
    return out


def calls_by_case(log: list[tuple]) -> list[dict]:
    """The host's log cut into plate cases: the adapt and predict entries and the network rows of each."""
    cases: list[dict] = []
    for entry in log:
        if entry[0] == "adapt":
            cases.append({"adapt": entry, "predict": [], "rows": {"adapt": 0, "predict": 0}, "phase": "adapt"})
        elif entry[0] == "predict":
            cases[-1]["predict"].append(entry)
            cases[-1]["phase"] = "predict"
        else:  # ("forward", rows)
            cases[-1]["rows"][cases[-1]["phase"]] += entry[1]
    return cases


def test_every_level_hands_each_plate_case_to_exactly_one_adapt_and_one_predict(toy_dataset):
    fold = make_folds(toy_dataset.index, "source_out", 0)[0]
    host = fitted_host(get_method("_test_plate_std")(), toy_dataset, fold)
    blocks = run_scenarios(host, toy_dataset, fold, 0, 0, SCENARIOS, {}, 1.0)
    cases = calls_by_case(host.log)
    assert [c["adapt"][1:] for c in cases] == expected_cases(toy_dataset, fold, blocks)
    assert all(len(c["predict"]) == 1 and c["predict"][0][1:] == c["adapt"][1:3] for c in cases)
    ran = sum(entry["n_calls"] for block in blocks.values() for entry in block["levels"].values()
              if entry["status"] == "ok")
    assert host.calls == len(cases) == ran
    statuses = {name: {lv: e["status"] for lv, e in b["levels"].items()} for name, b in blocks.items()}
    assert statuses["support"]["all"] == statuses["controls"]["all"] == "plain"  # copied, not run again


@pytest.mark.parametrize("method, settings", [("adabn", {}), ("cs_arm_bn", {"n_treated": 16}),
                                              ("cs_arm_bn", {"n_treated": 16, "full_domain_stats": True})])
def test_a_bn_method_sends_each_image_through_the_network_once_to_adapt_and_once_to_predict(small_synthetic, method,
                                                                                            settings):
    fold = make_folds(small_synthetic.index, "source_out", 0)[0]
    cls = get_method(method)
    model = cls(cls.Config(**{**cls.quick_overrides, "crop": 24, **settings}))
    host = fitted_host(model, small_synthetic, fold)
    handle = model.net.model.register_forward_pre_hook(lambda _m, args: host.log.append(("forward", len(args[0]))))
    try:
        blocks = run_scenarios(host, small_synthetic, fold, 0, 0, SCENARIOS, {}, 1.0)
    finally:
        handle.remove()
    cases = calls_by_case(host.log)
    assert len(cases) == sum(e["n_calls"] for b in blocks.values() for e in b["levels"].values() if e["status"] == "ok")
    test = model.recipe().test
    context = getattr(test, "context", None)
    for case in cases:
        _, _, treated, controls = case["adapt"]
        drawn = 0 if context is None or not context.n_controls else min(context.n_controls, controls)
        one_pass = treated + drawn * len(chunk_indices(treated, context.n_treated if context else treated))
        if test.uses_treated:  # statistics from the plate (AdaBN, full_domain_stats), then evaluation mode
            assert case["rows"] == {"adapt": one_pass, "predict": treated}, case
        else:  # each chunk normalised by its own statistics while it is predicted (CS-ARM-BN)
            assert case["rows"] == {"adapt": 0, "predict": one_pass}, case
