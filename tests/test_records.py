"""Run records: layout, atomic writing, loading, and what a killed run leaves behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmark import records
from benchmark.records import (RECORD_FORMAT, clean_temp_files, environment_info, git_commit, git_tree_state,
                               load_records, predictions_path, read_predictions, record_path, write_record)


def minimal_record(method="m", split="source_out", fold=0, seed=0, fp="abc123", status="ok"):
    return {"record_format": RECORD_FORMAT, "profile": "full", "status": status, "seed": seed,
            "method": {"name": method, "access": "none", "config": {}},
            "split": {"name": split, "fold": fold, "split_seed": 0, "held_out": ["s0"]},
            "dataset": {"name": "toy", "version": "v", "fingerprint": fp},
            "metrics": {"out_of_domain": {"accuracy": float("nan")}}}


def predictions(n=10):
    return pl.DataFrame({"image_id": np.arange(n), "label": np.zeros(n, dtype=np.int8)})


def test_layout_and_round_trip(tmp_path):
    path = record_path(tmp_path, "toy", "abc123", "erm", "batch_out", 2, 1)
    assert path == tmp_path / "toy-abc123" / "erm" / "batch_out" / "fold2_seed1.json"
    assert predictions_path(path).name == "fold2_seed1.predictions.parquet"
    assert record_path(tmp_path, "toy", "abc123", "erm", "batch_out", 2, 1, "quick").name == "fold2_seed1.quick.json"
    written = write_record(path, minimal_record(), predictions())
    data = json.loads(path.read_text())
    assert data == written
    assert data["metrics"]["out_of_domain"]["accuracy"] is None  # NaN -> null: strict JSON
    assert data["predictions"]["n_rows"] == 10 and len(data["predictions"]["sha256"]) == 64
    found = load_records(tmp_path)
    assert [r.path for r in found.ok] == [path]
    assert read_predictions(found.ok[0])["image_id"].to_list() == list(range(10))
    assert not list(path.parent.glob(".*"))  # no temp files left


def test_environment_info_names_versions_and_commit():
    env = environment_info()
    assert env["platebench"] == "0.1.0"
    assert env["git_commit"] == "unknown" or len(env["git_commit"]) == 40
    assert env["git_tree"] in {"clean", "modified", "unknown"}
    for lib in ("python", "torch", "numpy", "timm", "polars"):
        assert env[lib]


def test_git_tree_state_tells_a_modified_package_from_its_commit(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # never find a checkout above tmp_path

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "method.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("outside the package\n")
    assert git_tree_state(package) == "unknown" and git_commit(package) == "unknown"  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    assert git_tree_state(package) == "clean" and len(git_commit(package)) == 40
    (tmp_path / "notes.txt").write_text("changed outside the package\n")
    (package / "new_untracked.py").write_text("")
    (package / "CARD.md").write_text("a data card\n")
    subprocess.run([*git, "add", "pkg/CARD.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "card"], check=True)
    (package / "CARD.md").write_text("the data card, edited\n")
    assert git_tree_state(package) == "clean"  # only tracked files of the package count, and not its docs
    (package / "method.py").write_text("x = 2\n")
    assert git_tree_state(package) == "modified"


def test_a_crash_before_the_json_leaves_no_record(tmp_path, monkeypatch):
    path = record_path(tmp_path, "toy", "abc123", "m", "source_out", 0, 0)
    write_record(path, minimal_record(), predictions())
    real_replace = os.replace

    def replace(src, dst):  # the parquet goes through, the JSON does not
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(records.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_record(path, minimal_record(), predictions(5))
    monkeypatch.undo()
    # the old record was withdrawn before its parquet was replaced: neither old nor half-new is visible
    assert not path.exists()
    found = load_records(tmp_path)
    assert not found.ok and not found.invalid
    assert not list(path.parent.glob(".*"))  # temp files of the failed write are removed


def test_damaged_old_format_and_failed_records_are_sorted_out(tmp_path):
    ok = record_path(tmp_path, "toy", "abc123", "m", "source_out", 0, 0)
    write_record(ok, minimal_record(), predictions())
    predictions_path(ok).write_bytes(b"altered")
    gone = record_path(tmp_path, "toy", "abc123", "m", "source_out", 1, 0)
    write_record(gone, minimal_record(fold=1), predictions())
    predictions_path(gone).unlink()
    old = record_path(tmp_path, "toy", "abc123", "m", "source_out", 2, 0)
    write_record(old, {**minimal_record(fold=2), "record_format": 0}, predictions())
    bad = record_path(tmp_path, "toy", "abc123", "m", "source_out", 3, 0)
    bad.write_text("{not json")
    failed = record_path(tmp_path, "toy", "abc123", "m", "source_out", 4, 0)
    write_record(failed, minimal_record(fold=4, status="failed"), None)
    found = load_records(tmp_path)
    assert not found.ok
    assert [r.fold for r in found.failed] == [4]
    assert found.outdated == [(old, 0)]
    why = dict(found.invalid)
    assert "does not match the SHA-256 in the record" in why[ok]
    assert "fold1_seed0.predictions.parquet is missing" in why[gone]
    assert "cannot read run record" in why[bad]


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path):
    path = record_path(tmp_path, "toy", "abc123", "m", "source_out", 0, 0)
    write_record(path, minimal_record(), predictions())
    dead = path.with_name(f".{path.name}.tmp-999999999-abcdef")   # a killed writer's half-written JSON
    dead.write_text('{"record_format": 1, "status": "ok"')
    alive = path.with_name(f".{path.name}.tmp-{os.getppid()}-abcdef")  # a writer that is still running
    alive.write_text("{")
    assert len(load_records(tmp_path).ok) == 1 and not load_records(tmp_path).invalid
    assert clean_temp_files(tmp_path) == [dead]
    assert alive.exists() and not dead.exists()


WRITER = """
import sys
import numpy as np, polars as pl
from benchmark.records import RECORD_FORMAT, record_path, write_record
root = sys.argv[1]
for i in range(10_000):
    rec = {"record_format": RECORD_FORMAT, "profile": "full", "status": "ok", "seed": i,
           "method": {"name": "m", "access": "none", "config": {}},
           "split": {"name": "source_out", "fold": 0, "split_seed": 0, "held_out": ["s"]},
           "dataset": {"name": "toy", "version": "v", "fingerprint": "fp"}}
    pred = pl.DataFrame({"image_id": np.arange(20_000), "p": np.random.rand(20_000)})
    write_record(record_path(root, "toy", "fp", "m", "source_out", 0, i % 3), rec, pred)
"""


@pytest.mark.parametrize("delay", [0.05, 0.27])
def test_killing_a_writer_at_any_moment_leaves_only_complete_records(tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    folder = tmp_path / "toy-fp" / "m" / "source_out"
    deadline = time.time() + 60
    while not list(folder.glob("*.json")) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    found = load_records(tmp_path)  # verifies every parquet against its record's SHA-256
    assert found.ok and not found.invalid and not found.failed
    for rec in found.ok:
        assert len(read_predictions(rec)) == 20_000
    clean_temp_files(tmp_path)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
