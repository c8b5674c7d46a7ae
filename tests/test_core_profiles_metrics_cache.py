"""The memo of the uncorrected profiles' correction metrics (benchmark.core.profiles.metrics_cache)."""

from __future__ import annotations

import json

import numpy as np

from benchmark.core.profiles.data import concat, profiles_of
from benchmark.core.profiles.metrics_cache import cached_scores, scores_key


def _wells(seed=0, n=12):
    rng = np.random.default_rng(seed)
    parts = [profiles_of(rng.normal(size=(n, 4)), f"p{b}", f"s{b}", f"s{b}_b", [f"W{i:02d}" for i in range(n)],
                         np.arange(n) % 3 - (b == 0), b == 0) for b in range(3)]
    return concat(parts)


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"map": 0.25 + self.calls, "kbet": None, "n_wells": 36}


def test_scores_are_computed_once_and_read_back(tmp_path):
    compute = Counter()
    first, hit = cached_scores(tmp_path, _wells(), 0, compute)
    assert not hit and compute.calls == 1
    again, hit = cached_scores(tmp_path, _wells(), 0, compute)
    assert hit and compute.calls == 1 and again == first
    assert len(list(tmp_path.glob("scores-*.json"))) == 1 and not list(tmp_path.glob("*.tmp-*"))


def test_other_profiles_another_seed_or_other_metadata_miss():
    wells = _wells()
    key = scores_key(wells, 0)
    assert scores_key(_wells(), 0) == key
    assert scores_key(wells, 1) != key
    assert scores_key(_wells(seed=1), 0) != key
    moved = wells.with_x(wells.x + np.float32(1e-3))
    assert scores_key(moved, 0) != key
    relabelled = concat([wells.select(np.arange(len(wells)))])
    relabelled.label[0] += 1
    assert scores_key(relabelled, 0) != key


def test_without_a_folder_scores_are_computed_every_time():
    compute = Counter()
    cached_scores(None, _wells(), 0, compute)
    cached_scores(None, _wells(), 0, compute)
    assert compute.calls == 2


def test_a_damaged_or_foreign_entry_is_dropped_and_computed_again(tmp_path, capsys):
    compute = Counter()
    cached_scores(tmp_path, _wells(), 0, compute)
    (path,) = tmp_path.glob("scores-*.json")
    path.write_text("{not json")
    scores, hit = cached_scores(tmp_path, _wells(), 0, compute)
    assert not hit and compute.calls == 2 and "is unreadable" in capsys.readouterr().err
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "key": "0" * 64}))
    scores, hit = cached_scores(tmp_path, _wells(), 0, compute)
    assert not hit and compute.calls == 3 and "holds other scores" in capsys.readouterr().err
    assert scores == json.loads(path.read_text())["scores"]


def test_a_folder_that_cannot_be_written_still_gives_the_scores(tmp_path):
    compute = Counter()
    scores, hit = cached_scores(tmp_path / "missing", _wells(), 0, compute)
    assert scores["map"] == 1.25 and not hit
