"""`bench sweep`: the grid, its plan and order, the local and debug executors end to end on the toy dataset."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

from _record_compare import untimed
import pytest
from rich.console import Console
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.errors import BenchError, UnknownNameError
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records, read_predictions
from benchmark.sweep.grid import DEFAULT_METHODS, RunSettings, Unit, grid, prerequisites
from benchmark.sweep.local import _receive, _Worker, run_debug
from benchmark.sweep.plan import make_plan, recorded_seconds
from benchmark.sweep.progress import SweepProgress
from benchmark.sweep.schedule import Schedule, order_units, priorities
from benchmark.sweep.unit import UnitResult, run_unit

pytestmark = pytest.mark.usefixtures("toy_methods_in_workers")
runner = CliRunner()
TOY = ("_test_centroid", "_test_plate_std")


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


def settings(tmp_path, dataset, **values) -> RunSettings:
    return RunSettings.build(results_dir=tmp_path / "res", dataset=str(dataset.root), device="cpu", **values)


@pytest.fixture
def base(toy_dataset, tmp_path):
    return ["--dataset", toy_dataset.root, "--results", tmp_path / "res", "--device", "cpu", "--folds", "0",
            "--seeds", "0", "--splits", "source_out", "--logs", tmp_path / "logs", "--scenarios", "none"]


def _by_method(results_dir: Path) -> dict[str, object]:
    return {r.method: r for r in load_records(results_dir).ok}


def _same_records(ours: Path, reference: Path) -> None:
    """Every record in ``ours`` has the metrics (timings aside) and predictions of its namesake in ``reference``."""
    a, b = _by_method(ours), _by_method(reference)
    assert a and sorted(a) == sorted(b)
    for method, rec in a.items():
        assert rec.data["metrics"]["out_of_domain"]["accuracy"] is not None
        assert untimed(rec.data["metrics"]) == untimed(b[method].data["metrics"]), method
        assert read_predictions(rec).equals(read_predictions(b[method])), method


# -- the grid, who waits for whom, the order ---------------------------------------------------------------

def test_the_default_methods_are_the_leaderboard_scripts_and_erm_precedes_its_followers():
    assert DEFAULT_METHODS[:2] == ("ben", "cs_arm_bn") and "arm_cml" not in DEFAULT_METHODS
    assert all(DEFAULT_METHODS.index("erm") < DEFAULT_METHODS.index(m) for m in ("adabn", "tent", "deyo", "roid"))
    script = (Path(__file__).parents[1] / "scripts" / "run_leaderboard.sh").read_text()
    assert "bench sweep" in script and "xargs" not in script


def test_followers_wait_for_the_first_unit_sharing_their_source_model(tmp_path):
    s = RunSettings(results_dir=str(tmp_path))
    units = grid(["erm", "adabn", "ben", "tent"], {"source_out": [0, 1]}, [0], s)
    shared = {"erm": "ERMConfig", "adabn": "ERMConfig", "tent": "ERMConfig", "ben": None}
    waits = prerequisites(units, shared)
    erm0, erm1 = Unit("erm", "source_out", 0, 0, s), Unit("erm", "source_out", 1, 0, s)
    assert waits == {Unit("adabn", "source_out", 0, 0, s): erm0, Unit("adabn", "source_out", 1, 0, s): erm1,
                     Unit("tent", "source_out", 0, 0, s): erm0, Unit("tent", "source_out", 1, 0, s): erm1}
    # whichever comes first in --methods trains and caches the model
    assert set(prerequisites(grid(["adabn", "erm"], {"batch_out": [0]}, [0], s), shared).values()) == \
        {Unit("adabn", "batch_out", 0, 0, s)}


def test_seeds_that_share_the_folds_cached_features_wait_for_its_first_seed(tmp_path):
    """cell_count's seeds 1 and 2 of a fold read the features seed 0 computed; ERM's seeds train models of their own."""
    from benchmark.registry import available_methods
    from benchmark.sweep.plan import _seeds_share

    s = RunSettings(results_dir=str(tmp_path))
    units = grid(["cell_count", "erm"], {"batch_out": [0, 1]}, [0, 1, 2], s)
    waits = prerequisites(units, {"erm": "ERMConfig", "cell_count": None}, {"cell_count"})
    first = {k: Unit("cell_count", "batch_out", k, 0, s) for k in (0, 1)}
    assert waits == {Unit("cell_count", "batch_out", k, seed, s): first[k] for k in (0, 1) for seed in (1, 2)}
    classes = available_methods()
    infos = {name: type("Info", (), {"plugin": False})() for name in ("cell_count", "cellprofiler", "erm", "fm_tvn")}
    assert _seeds_share(infos) == {"cell_count", "cellprofiler"}
    assert not classes["erm"].seeds_share_fold_work


def test_order_is_longest_critical_path_first_and_the_schedule_holds_followers_back():
    waits = {"adabn": "erm", "tent": "erm"}
    estimates = {"ben": 25.0, "erm": 9.0, "adabn": 4.0, "tent": 20.0, "stats": None}
    units = ["ben", "stats", "erm", "adabn", "tent"]
    assert priorities(units, waits, estimates) == {"ben": 25.0, "stats": 25.0, "erm": 29.0, "adabn": 4.0,
                                                   "tent": 20.0}
    ordered = order_units(units, waits, estimates)
    assert ordered == ["erm", "ben", "stats", "tent", "adabn"]
    assert order_units(["a", "b", "c"], {}, {}) == ["a", "b", "c"]  # nothing known: the given order
    schedule = Schedule(["tent", "erm", "ben"], waits)
    assert schedule.take() == "erm" and schedule.take() == "ben" and schedule.take() is None
    assert schedule.pending == 1
    schedule.finish("erm")
    assert schedule.take() == "tent" and schedule.pending == 0
    assert Schedule(["tent"], waits).take() == "tent"  # erm finished before the sweep: no wait


def test_the_plan_checks_names_builds_records_and_skips_finished_units(toy_dataset, tmp_path):
    s = settings(tmp_path, toy_dataset)
    plan = make_plan(list(TOY), ["source_out", "batch_out"], [0], [0, 1], s)
    assert plan.total == 8 and not plan.finished and not plan.waits
    unit = next(u for u in plan.todo if u.method == "_test_centroid" and u.split == "batch_out" and u.seed == 1)
    assert unit.record == str(tmp_path / "res" / f"toy-{toy_dataset.fingerprint}" / "_test_centroid" / "batch_out"
                              / "fold0_seed1.json")
    assert unit.module == "_toy_methods"
    run_protocol("_test_centroid", "source_out", toy_dataset, seeds=[0, 1], folds=[0], device="cpu",
                 results_dir=tmp_path / "res")
    again = make_plan(list(TOY), ["source_out", "batch_out"], [0], [0, 1], s)
    assert sorted(u.label for u in again.finished) == ["_test_centroid source_out fold 0 seed 0",
                                                       "_test_centroid source_out fold 0 seed 1"]
    assert len(again.todo) == 6
    # the records' run times order what is left; a changed config is not finished
    assert set(recorded_seconds(again.todo, tmp_path / "res", "toy", "full").values()) == {None}
    done = Unit("_test_centroid", "source_out", 0, 0, s)
    assert recorded_seconds([done], tmp_path / "res", "toy", "full")[done] > 0
    assert recorded_seconds([done], tmp_path / "res", "toy", "quick")[done] is None
    changed = make_plan(["_test_centroid"], ["source_out"], [0], [0, 1],
                        settings(tmp_path, toy_dataset, overrides={"temperature": "0.5"}))
    assert not changed.finished and len(changed.todo) == 2
    forced = make_plan(["_test_centroid"], ["source_out"], [0], [0], settings(tmp_path, toy_dataset, force=True))
    assert not forced.finished


@pytest.mark.parametrize("methods, splits, folds, values, message", [
    (["nope"], ["source_out"], None, {}, "unknown method 'nope'. Valid methods: "),
    ([], ["source_out"], None, {}, "--methods is empty"),
    (["_test_centroid"], ["lab_out"], None, {}, "unknown split 'lab_out'. Valid splits: batch_out, source_out."),
    (["_test_centroid"], ["source_out"], [7], {}, "fold(s) 7 do not exist for split source_out; valid folds: 0, 1, 2, 3"),
    (["_test_centroid", "erm"], ["source_out"], None, {"overrides": {"temperature": "2"}},
     "unknown hyper-parameter(s) temperature for ERMConfig"),
    (["_test_centroid"], ["source_out"], None, {"preset": "papr"}, "unknown preset 'papr'"),
    (["_test_centroid"], ["source_out"], None, {"run_options": {"nope": "1"}}, "unknown run option 'nope'"),
    (["_test_centroid"], ["source_out"], None, {"scenarios": "labelshift"}, "unknown scenario 'labelshift'"),
    (["_test_centroid"], ["source_out"], None, {"run_options": {"scenarios": "all"}},
     "--run-option scenarios=... is set by bench sweep itself"),
    (["_test_centroid"], ["source_out"], None, {"run_options": {"seeds": "1"}},
     "--run-option seeds=... is set by bench sweep itself"),
])
def test_plan_errors_name_what_is_valid(toy_dataset, tmp_path, methods, splits, folds, values, message):
    with pytest.raises(BenchError) as err:
        make_plan(methods, splits, folds, [0], settings(tmp_path, toy_dataset, **values))
    assert str(err.value).startswith(message), str(err.value)
    if "unknown" in message:
        assert isinstance(err.value, UnknownNameError) or "hyper-parameter" in message
    if "ERMConfig" in message:
        assert str(err.value).endswith("(method erm)")


def test_extra_run_keywords_pass_through_untouched_and_the_protocol_decides(toy_dataset, tmp_path):
    options = {"dataset_options": {}}
    s = settings(tmp_path, toy_dataset, run_options=options)
    (unit,) = make_plan(["_test_centroid"], ["source_out"], [0], [0], s).todo
    assert unit.run_kwargs()["dataset_options"] is not None and unit.run_kwargs()["dataset_options"] == {}
    assert run_unit(unit).status == "ok"
    # with extra keywords the plan leaves the decision to run_protocol, which skips the finished run
    (again,) = make_plan(["_test_centroid"], ["source_out"], [0], [0], s).todo
    assert run_unit(again).status == "skipped"


def test_scenario_blocks_reach_the_record_and_a_record_lacking_one_is_not_finished(base, tmp_path):
    args = ["sweep", "--methods", "_test_centroid", *base[:-2], "--executor", "debug"]
    r = bench(*args, "--scenarios", "label_shift")
    assert r.exit_code == 0, r.output
    (rec,) = load_records(tmp_path / "res").ok
    assert set(rec.data["scenarios"]) == {"label_shift"}
    assert "0 done, 1 skipped (already recorded)" in bench(*args, "--scenarios", "label_shift").stdout
    assert "0 done, 1 skipped (already recorded)" in bench(*args, "--scenarios", "none").stdout
    more = bench(*args, "--scenarios", "label_shift,support")  # the protocol's check: adding a block
    assert more.exit_code == 0 and "1 done, 0 skipped" in more.stdout
    (rec,) = load_records(tmp_path / "res").ok
    assert set(rec.data["scenarios"]) == {"label_shift", "support"}


# -- the live table ------------------------------------------------------------------------------------------

def test_the_live_table_counts_and_lists_running_and_failed_units(tmp_path):
    s = RunSettings(results_dir=str(tmp_path))
    a, b, c, d = (Unit("erm", "source_out", k, 0, s, record=f"r{k}") for k in range(4))
    console = Console(record=True, width=160, force_terminal=False)
    progress = SweepProgress(5, [d], console)
    progress.mark_running(a)
    progress.mark_queued(b)
    progress.mark_finished(UnitResult(c, "failed", 1.0, error="fit raised RuntimeError: boom", log="c.log"))
    console.print(progress.table())
    text = console.export_text()
    assert "[2/5] FAILED  erm source_out fold 2 seed 0: fit raised RuntimeError: boom (log: c.log)" in text
    assert "0 done · 1 running · 1 queued · 1 failed · 1 skipped · 1 waiting, of 5 units" in text
    assert "erm source_out fold 0 seed 0" in text and "running" in text
    progress.mark_finished(UnitResult(a, "ok", 2.0, 0.75, 0.8))
    progress.summary()
    text = console.export_text()
    assert "[3/5] ok      erm source_out fold 0 seed 0: out-of-domain 0.750, in-domain 0.800 (2.0 s)" in text
    assert "1 done, 1 skipped (already recorded), 1 failed, 2 not finished, of 5 units" in text


# -- the executors end to end -----------------------------------------------------------------------------------

def test_local_sweep_writes_the_records_of_in_process_runs_reports_a_failure_then_resumes(base, toy_dataset,
                                                                                         tmp_path):
    methods = ",".join([*TOY, "_test_fail_fit"])
    r = bench("sweep", "--methods", methods, *base, "--jobs", "2")
    assert r.exit_code == 1, r.output
    assert "bench sweep: 3 units, 0 already recorded, 3 to run (2 worker process(es)" in r.stdout
    assert "2 done, 0 skipped (already recorded), 1 failed, of 3 units" in r.stdout
    assert ("error: 1 of 3 units failed (first: _test_fail_fit source_out fold 0 seed 0: fit raised RuntimeError: "
            f"boom in fit; log: {tmp_path / 'logs' / '_test_fail_fit-source_out-fold0-seed0.log'}); their records "
            "and logs say why, rerun the same command to retry") in r.stderr
    logs = sorted(p.name for p in (tmp_path / "logs").glob("*.log") if not p.name.startswith("worker-"))
    assert logs == [f"{m}-source_out-fold0-seed0.log" for m in sorted([*TOY, "_test_fail_fit"])]
    assert "expected wall time: unknown (3 units to run, 2 at once" in r.stdout and "actual wall time: " in r.stdout
    (clock,) = (json.loads(line) for line in (tmp_path / "logs" / "sweeps.jsonl").read_text().splitlines())
    assert clock["executor"] == "local" and clock["counts"]["failed"] == 1 and clock["actual_s"] > 0
    assert sorted(p.name for p in (tmp_path / "logs").glob("worker-*.log")) == ["worker-1.log", "worker-2.log"]
    assert "out-of-domain accuracy" in (tmp_path / "logs" / logs[0]).read_text()
    assert [f.method for f in load_records(tmp_path / "res").failed] == ["_test_fail_fit"]
    for method in TOY:
        run_protocol(method, "source_out", toy_dataset, seeds=[0], folds=[0], device="cpu",
                     results_dir=tmp_path / "ref")
    _same_records(tmp_path / "res", tmp_path / "ref")
    # resumed (in this process, where the forkserver is warm): the failed unit runs again, the others are skipped
    again = bench("sweep", "--methods", methods, *base, "--executor", "debug")
    assert again.exit_code == 1
    assert "bench sweep: 3 units, 2 already recorded, 1 to run" in again.stdout
    assert "0 done, 2 skipped (already recorded), 1 failed, of 3 units" in again.stdout


def test_debug_sweep_runs_in_process_with_the_same_records(base, toy_dataset, tmp_path):
    r = bench("sweep", "--methods", "_test_ctrl_std", *base, "--executor", "debug", "--splits", "batch_out")
    assert r.exit_code == 0, r.output
    assert "[_test_ctrl_std batch_out] fold 0 (held out" in r.stdout  # the protocol's own lines, in this process
    assert not (tmp_path / "logs").exists()
    run_protocol("_test_ctrl_std", "batch_out", toy_dataset, seeds=[0], folds=[0], device="cpu",
                 results_dir=tmp_path / "ref")
    _same_records(tmp_path / "res", tmp_path / "ref")


def test_a_worker_that_dies_without_reporting_fails_its_unit_naming_the_exit_code(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=os._exit, args=(3,))
    proc.start()
    theirs.close()
    proc.join()
    unit = Unit("erm", "source_out", 0, 0, RunSettings(results_dir=str(tmp_path)))
    result = _receive(_Worker(proc, mine, tmp_path / "worker-1.log", unit, tmp_path / "u.log"))
    assert result.status == "failed" and result.log == str(tmp_path / "u.log")
    assert result.error == "the unit's process exited with code 3 before reporting (killed or out of memory?)"


def test_a_protocol_error_inside_a_unit_is_its_failed_result(toy_dataset, tmp_path):
    s = settings(tmp_path, toy_dataset, time_limit_s=-1.0)
    (unit,) = make_plan(["_test_centroid"], ["source_out"], [0], [0], s).todo
    progress = SweepProgress(1, [], Console(record=True, width=200))
    (result,) = run_debug(make_plan(["_test_centroid"], ["source_out"], [0], [0], s), progress)
    assert result.unit == unit and result.status == "failed"
    assert result.error == "the time limit must be positive, got -1 s"


def test_erm_runs_before_adabn_which_loads_its_cached_model(toy_dataset, tmp_path, monkeypatch):
    """The dependency on the real methods; ERM's record matches an in-process run with a cache of its own."""
    monkeypatch.setenv("PLATEBENCH_CACHE", str(tmp_path / "cache"))
    r = bench("sweep", "--methods", "erm,adabn", "--dataset", toy_dataset.root, "--results", tmp_path / "res",
              "--device", "cpu", "--folds", "1", "--splits", "source_out", "--quick", "--set", "crop=0",
              "--logs", tmp_path / "logs", "--jobs", "2", "--scenarios", "none")
    assert r.exit_code == 0, r.output
    assert r.stdout.index("erm source_out fold 1 seed 0: out-of-domain") < \
        r.stdout.index("adabn source_out fold 1 seed 0: out-of-domain")
    quick = {rec.method: rec for rec in load_records(tmp_path / "res").quick}
    assert set(quick) == {"adabn", "erm"}
    # erm trains and caches the model; adabn, started only after it, loads it
    assert quick["erm"].data["fit_report"]["source_model"]["cached"] is False
    assert quick["adabn"].data["fit_report"]["source_model"]["cached"] is True
    # the reference: ERM fitted in this process with no cache (no sealed run, so no zygote of its own to start:
    # that a sealed run equals the in-process one is tests/test_sealed_worker.py's, for this very erm run)
    from benchmark.protocol.evaluation import fit_and_evaluate
    from benchmark.protocol.loop import resolve_config
    from benchmark.records import json_safe
    from benchmark.registry import get_method
    from benchmark.splits import make_folds

    erm = get_method("erm")
    ref = fit_and_evaluate(erm(resolve_config(erm, {"crop": "0"}, True), device="cpu"), toy_dataset,
                           make_folds(toy_dataset.index, "source_out")[1], 0)
    assert ref.fit_report["source_model"]["cached"] is False  # trained here, in process
    assert untimed(json.loads(json.dumps(json_safe(ref.metrics)))) == untimed(quick["erm"].data["metrics"])
    assert ref.predictions.equals(read_predictions(quick["erm"]))


# -- the command line -----------------------------------------------------------------------------------------

def test_dry_run_prints_the_order_and_who_waits(base, tmp_path):
    r = bench("sweep", "--methods", "erm,tent", *base, "--dry-run", "--seeds", "0,1")
    assert r.exit_code == 0, r.output
    assert "bench sweep plan: 4 to run, 0 already recorded" in r.stdout
    lines = [line for line in r.stdout.splitlines() if "source_out fold 0 seed" in line]
    assert "erm source_out fold 0 seed 0" in lines[0] and "tent source_out fold 0 seed 0 │ erm source_out" in \
        " ".join(lines)
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "cloud"], "error: unknown executor 'cloud'. Valid executors: debug, local, slurm."),
    (["--jobs", "0"], "error: --jobs must be at least 1, got 0"),
    (["--partition", "gpu"], "error: the SLURM options (partition) apply to --executor slurm only"),
    (["--no-wait"], "error: the SLURM options (no_wait) apply to --executor slurm only"),
    (["--run-option", "scenarios"], "error: --run-option expects key=value, got 'scenarios'"),
    (["--seeds", "x"], "error: --seeds expects comma-separated integers (e.g. --seeds 0,1,2), got 'x'"),
    (["--methods", " , "], "error: --methods is empty"),
    (["--splits", ","], "error: --splits is empty"),
])
def test_bad_options_are_one_line_on_stderr(base, tmp_path, args, message):
    r = bench("sweep", "--methods", "_test_centroid", *base, *args)
    assert r.exit_code == 1
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "res").exists()


def test_the_record_layout_is_the_protocols(toy_dataset, tmp_path):
    """A sweep's unit writes exactly where `bench run` would: the same file, the same JSON keys."""
    (unit,) = make_plan(["_test_centroid"], ["source_out"], [0], [0], settings(tmp_path, toy_dataset)).todo
    assert run_unit(unit).status == "ok"
    data = json.loads(Path(unit.record).read_text())
    assert data["method"]["name"] == "_test_centroid" and data["split"]["fold"] == 0 and data["seed"] == 0
