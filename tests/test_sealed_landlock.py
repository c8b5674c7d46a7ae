"""The worker's kernel-level wall (Linux Landlock): native reads of the dataset's files fail too.

The audit hook cannot see native code that opens a file itself; ``_cheat_native`` reads the
index with polars and the shards with ``torch.from_file``. With Landlock (where the kernel has
it) its reads fail and it scores at chance; with the audit hook alone
(``PLATEBENCH_SANDBOX=audit``) it wins — the residual risk ``docs/sealed.md`` names.
"""

from __future__ import annotations

import os

import pytest

import _cheaters  # noqa: F401  (registers the cheaters)
from _cheaters import ROOT_ENV
from benchmark.evaluation import fit_and_evaluate
from benchmark.protocol import run_protocol
from benchmark.records import load_records
from benchmark.sealed import landlock
from benchmark.splits import make_folds

needs_landlock = pytest.mark.skipif(landlock.abi_version() == 0, reason="this kernel has no Landlock")


def test_the_allowed_paths_cover_everything_but_the_protected_folders(tmp_path):
    for folder in ("a/cache/sealed/fold0", "a/cache/other", "a/keep", "b"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "a" / "file.txt").write_text("x")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "cache")
    cache = tmp_path / "a" / "cache"
    paths = landlock.allowed_paths([str(cache)], [str(cache / "sealed" / "fold0")], root=str(tmp_path))
    assert sorted(paths) == sorted(str(tmp_path / p) for p in ("a/file.txt", "a/keep", "b", "a/cache/sealed/fold0"))


def test_nothing_protected_under_the_root_allows_the_root(tmp_path):
    assert landlock.allowed_paths(["/somewhere/else"], [], root=str(tmp_path)) == [str(tmp_path)]


def test_the_sandbox_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(landlock.SANDBOX_ENV, "audit")
    assert landlock.restrict_reads(["/nonexistent"], []) == "audit hook only (PLATEBENCH_SANDBOX=audit)"


def _run(dataset, tmp_path):
    (outcome,) = run_protocol("_cheat_native", "source_out", dataset, seeds=[0], folds=[0], device="cpu",
                              results_dir=tmp_path / "res")
    return outcome, load_records(tmp_path / "res")


@needs_landlock
def test_native_reads_are_refused_by_the_kernel(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(toy_dataset.root))
    fold = make_folds(toy_dataset.index, "source_out")[0]
    assert fit_and_evaluate(_cheaters.Native(), toy_dataset, fold, 0).metrics["out_of_domain"]["accuracy"] == 1.0
    outcome, records = _run(toy_dataset, tmp_path)
    assert outcome.status == "ok" and outcome.out_of_domain_accuracy <= 0.2 and outcome.in_domain_accuracy <= 0.2
    (record,) = records.ok
    assert record.data["worker"]["sandbox"] == f"landlock ABI {landlock.abi_version()}"


def test_with_the_audit_hook_alone_a_native_reader_wins(toy_dataset, tmp_path, monkeypatch):
    """The documented residual risk, measured rather than assumed: this test fails the day it is closed."""
    monkeypatch.setenv(ROOT_ENV, str(toy_dataset.root))
    monkeypatch.setenv(landlock.SANDBOX_ENV, "audit")
    outcome, records = _run(toy_dataset, tmp_path)
    assert outcome.status == "ok" and outcome.out_of_domain_accuracy == 1.0
    (record,) = records.ok
    assert record.data["worker"]["sandbox"].startswith("audit hook only")
