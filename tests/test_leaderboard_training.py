"""The leaderboard's training table: epochs, best epoch, cap and how many runs converged."""

from __future__ import annotations

from pathlib import Path

from benchmark.leaderboard.training import training_table
from benchmark.records import Record


def _record(method: str, fit_report: dict, max_epochs: int = 60) -> Record:
    return Record(Path(f"{method}.json"), {"method": {"name": method, "access": "none",
                                                        "config": {"max_epochs": max_epochs}},
                                           "fit_report": fit_report})


def test_a_run_converged_when_its_best_epoch_came_before_the_cap():
    records = [_record("erm", {"epochs_run": 26, "best_epoch": 21, "max_epochs": 60, "train_seconds": 100.0}),
               _record("erm", {"epochs_run": 60, "best_epoch": 60, "max_epochs": 60, "train_seconds": 300.0}),
               _record("old", {"epochs_run": 3, "best_epoch": 3}, max_epochs=3),  # the cap from the config
               _record("intensity_stats", {"n_features": 35})]  # no epochs: no row
    table = training_table(records)
    assert table[2] == "| `erm` | 2 | 43.0 (26–60) | 40.5 (21–60) | 60 | 1 of 2 | 200 |"
    assert table[3] == "| `old` | 1 | 3.0 (3–3) | 3.0 (3–3) | 3 | 0 of 1 | – |"
    assert len(table) == 4


def test_no_network_no_table():
    assert training_table([_record("intensity_stats", {})]) == []
