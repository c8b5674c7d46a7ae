"""A leaderboard row never averages two configs of a method: the newest config's records count, the rest are
listed as superseded."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.leaderboard.config_versions import newest_config
from benchmark.records import Record


def _record(method: str, fold: int, created: str, **config) -> Record:
    data = {"method": {"name": method, "config": config}, "created": created, "split": {"name": "source_out",
            "fold": fold}, "seed": 0, "dataset": {"name": "synthetic", "fingerprint": "abc"}}
    return Record(Path(f"{method}/source_out/fold{fold}_seed0.json"), data)


def test_only_the_newest_config_of_a_method_counts_and_the_rest_is_named():
    old = [_record("erm", f, "2026-12-01T10:00:00+00:00", max_epochs=3, lr=0.01) for f in range(3)]
    new = [_record("erm", 0, "2026-12-08T10:00:00+00:00", max_epochs=60, lr=0.01)]
    other = [_record("tent", f, "2026-12-01T10:00:00+00:00", steps=1) for f in range(2)]
    kept, superseded = newest_config(old[1:] + new + other)
    assert kept == new + other
    assert len(superseded) == 1 and superseded[0].method == "erm" and len(superseded[0].records) == 2
    assert superseded[0].differs == {"max_epochs": (3, 60)}
    assert "2 record(s) of `erm` made with an older config (max_epochs=3 (now 60))" in superseded[0].reason()


def test_one_config_supersedes_nothing():
    records = [_record("erm", f, f"2026-12-0{f + 1}T10:00:00+00:00", max_epochs=3) for f in range(3)]
    assert newest_config(records) == (records, [])


def _scored(method: str, fold: int, seed: int, accuracy: float, **config) -> Record:
    data = {"method": {"name": method, "access": "none", "config": config}, "split": {"name": "batch_out",
            "fold": fold}, "seed": seed, "dataset": {"name": "synthetic", "fingerprint": "abc"},
            "metrics": {"out_of_domain": {"accuracy": accuracy}}}
    return Record(Path(f"{method}/batch_out/fold{fold}_seed{seed}.json"), data)


def test_a_paired_difference_never_pairs_two_training_budgets():
    from benchmark.leaderboard.tables import paired_difference

    erm = [_scored("erm", f, 0, 0.95, max_epochs=100, batch_size=32) for f in range(2)]
    old = [_scored("adabn", f, 0, 0.80, max_epochs=3, batch_size=32) for f in range(2)]
    new = [_scored("adabn", f, 0, 0.97, max_epochs=100, batch_size=32) for f in range(2)]
    profile = [_scored("intensity_stats", f, 0, 0.90, C=1.0) for f in range(2)]  # no training budget: comparable
    assert paired_difference(erm + old, "adabn", "batch_out")[3] == 0  # no pair: a 3-epoch run vs a converged one
    assert paired_difference(erm + new, "adabn", "batch_out")[0] == pytest.approx(0.02)
    assert paired_difference(erm + profile, "intensity_stats", "batch_out")[3] == 2
