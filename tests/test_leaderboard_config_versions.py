"""A leaderboard row never averages two configs of a method: the newest config's records count, the rest are
listed as superseded."""

from __future__ import annotations

from pathlib import Path

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
