"""The sweep's clock: expected wall time from earlier records (with -j), unknown where none, actual kept in a file."""

from __future__ import annotations

import json

from rich.console import Console

from benchmark.sweep.clock import CLOCK_FILE, Expected, actual_line, append_clock, duration, expected, replay
from benchmark.sweep.grid import RunSettings, Unit
from benchmark.sweep.plan import Plan, recorded_seconds
from benchmark.sweep.progress import SweepProgress
from benchmark.sweep.unit import UnitResult

S = RunSettings(results_dir="res")


def unit(method: str, split: str = "source_out", fold: int = 0) -> Unit:
    return Unit(method, split, fold, 0, S)


def test_replay_follows_the_executors_order_waits_and_parallelism():
    a, b, c, d = unit("a"), unit("b"), unit("c"), unit("d")
    seconds = {a: 10.0, b: 5.0, c: 3.0, d: 4.0}
    waits = {c: a}
    assert replay([a, b, c, d], waits, seconds, 1) == 22.0
    # 2 at once: a 0-10, b 0-5, d 5-9 (c waits for a), c 10-13
    assert replay([a, b, c, d], waits, seconds, 2) == 13.0
    assert replay([a, b, c, d], {}, seconds, 4) == 10.0
    assert replay([c], waits, seconds, 2) == 3.0  # a prerequisite outside the units never blocks


def test_expected_names_the_methods_without_records_and_takes_jobs_into_account():
    erm0, erm1, arm = unit("erm", fold=0), unit("erm", fold=1), unit("arm_cml", "batch_out")
    plan = Plan([erm0, erm1, arm], [unit("erm", fold=2)], estimates={erm0: 100.0, erm1: 100.0, arm: None})
    two = expected(plan, 2)
    assert (two.seconds, two.serial_s, two.jobs, two.units, two.known) == (100.0, 200.0, 2, 3, 2)
    assert two.unknown == {"arm_cml": ["batch_out"]}
    assert two.line() == ("expected wall time: 1 min 40 s for 2 of 3 units to run (2 at once; 3 min 20 s of runs, "
                          "from the earlier records' worker.wall_s); unknown for 1 unit(s) without an earlier record: "
                          "arm_cml (batch_out)")
    assert expected(plan, 1).seconds == 200.0 and expected(plan, 16).jobs == 3
    none = expected(Plan([arm], [], estimates={arm: None}), 2)
    assert none.seconds is None and none.line().startswith("expected wall time: unknown (1 units to run")
    assert expected(Plan([], []), 2).line() == "expected wall time: nothing left to run"


def test_expected_times_come_from_ok_records_worker_wall_s(tmp_path):
    folder = tmp_path / "res" / "toy-abc" / "erm" / "source_out"
    folder.mkdir(parents=True)
    for name, data in {"fold0_seed0.json": {"status": "ok", "worker": {"wall_s": 100.0}, "timings": {"total_s": 90}},
                       "fold1_seed0.json": {"status": "ok", "timings": {"total_s": 50.0}},  # older: no worker block
                       "fold2_seed0.json": {"status": "ok", "worker": {"wall_s": 300.0}},
                       "fold3_seed0.json": {"status": "failed", "worker": {"wall_s": 1.0}}}.items():
        (folder / name).write_text(json.dumps(data))
    erm, tent = unit("erm"), unit("tent")
    assert recorded_seconds([erm, tent], tmp_path / "res", "toy", "full") == {erm: 100.0, tent: None}


def test_the_summary_says_the_actual_wall_time_and_a_file_keeps_it(tmp_path):
    erm = unit("erm")
    plan = Plan([erm], [], estimates={erm: 60.0}, dataset="toy", fingerprint="abc")
    console = Console(file=open(tmp_path / "out.txt", "w"), width=200)
    progress = SweepProgress(1, [], console)
    progress.expected = expected(plan, 2)
    progress.mark_finished(UnitResult(erm, "ok", 1.0, 0.5, 0.6))
    progress.summary()
    console.file.close()
    text = (tmp_path / "out.txt").read_text()
    assert "actual wall time: " in text and "; expected 1 min 00 s" in text
    path = append_clock(tmp_path / "logs", plan, "local", 0.0, 42.0, progress.expected, progress.counts())
    append_clock(tmp_path / "logs", plan, "debug", 0.0, 7.0, None, progress.counts())
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert path.name == CLOCK_FILE and first["actual_s"] == 42.0 and first["expected"]["seconds"] == 60.0
    assert first["counts"]["done"] == 1 and first["to_run"] == 1 and second["expected"] is None


def test_durations_and_the_actual_line_read_well():
    assert [duration(s) for s in (0.4, 42, 192, 7500)] == ["0.4 s", "42 s", "3 min 12 s", "2 h 05 min"]
    known = Expected(60.0, 60.0, 1, 2, 1, {"x": ["batch_out"]})
    assert actual_line(75.0, known) == ("actual wall time: 1 min 15 s (75.0 s); expected 1 min 00 s for the units "
                                        "with an earlier record")
    assert actual_line(5.0, None) == "actual wall time: 5 s (5.0 s)"


def test_only_records_of_the_config_the_sweep_runs_give_its_expected_time(tmp_path):
    folder = tmp_path / "res" / "toy-abc" / "erm" / "source_out"
    folder.mkdir(parents=True)
    for name, (epochs, seconds) in {"fold0_seed0.json": (3, 60.0), "fold1_seed0.json": (100, 500.0)}.items():
        (folder / name).write_text(json.dumps({"status": "ok", "worker": {"wall_s": seconds},
                                               "method": {"config": {"max_epochs": epochs}}}))
    erm = unit("erm")
    assert recorded_seconds([erm], tmp_path / "res", "toy", "full", {"erm": {"max_epochs": 100}}) == {erm: 500.0}
    assert recorded_seconds([erm], tmp_path / "res", "toy", "full", {"erm": {"max_epochs": 50}}) == {erm: None}
