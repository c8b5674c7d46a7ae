"""Issue 23's cheaters and reliability holes against the sandbox: each fails its own record or scores as an honest
method would, the evaluator survives, and the next run goes on.

The sandbox is whatever this machine allows (bubblewrap, else Landlock, else the audit hook); every record
says which (``worker.sandbox``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import _cheaters_sandbox as cheats
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records
from benchmark.sealed import runs as sealed_runs
from benchmark.sealed.sandbox import choose
from benchmark.sealed.zygote import descendants


pytestmark = pytest.mark.usefixtures("toy_methods", "sandbox_cheaters")


def run(dataset, tmp_path, method, **options):
    (outcome,) = run_protocol(method, "source_out", dataset, seeds=[0], folds=[0], device="cpu",
                              results_dir=tmp_path / "res", scenarios="none", **options)
    return outcome


def record_of(tmp_path, outcome):
    found = load_records(tmp_path / "res")
    records = [r for r in [*found.ok, *found.failed] if r.path == outcome.path]
    assert records, f"no record at {outcome.path}"
    return records[0].data


@pytest.fixture(scope="module")
def honest(toy_dataset, tmp_path_factory):
    """An honest run of the centroid the cheaters build on: its records (with labels) and its accuracy."""
    folder = tmp_path_factory.mktemp("honest")
    outcome = run(toy_dataset, folder, "_test_centroid")
    assert outcome.status == "ok", outcome.error
    return folder / "res", outcome.out_of_domain_accuracy


def test_every_record_names_its_sandbox(toy_dataset, tmp_path):
    outcome = run(toy_dataset, tmp_path, "_test_centroid")
    sandbox = record_of(tmp_path, outcome)["worker"]["sandbox"]
    kind, _ = choose()
    assert sandbox.startswith({"bubblewrap": "bubblewrap", "landlock": "no namespaces; landlock",
                               "audit": "no namespaces; audit"}[kind]), sandbox


def test_earlier_predictions_are_out_of_reach(toy_dataset, tmp_path, honest, monkeypatch):
    results, accuracy = honest
    assert list(results.rglob("*.predictions.parquet"))  # in process they are right there
    monkeypatch.setenv(cheats.RESULTS_ENV, str(results))
    outcome = run(toy_dataset, tmp_path, "_cheat23_predictions")
    assert outcome.status == "failed" or outcome.out_of_domain_accuracy == pytest.approx(accuracy), outcome


def test_the_model_cache_cannot_be_planted(toy_dataset, tmp_path, monkeypatch):
    from benchmark.paths import cache_dir

    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv(cheats.MODELS_ENV, str(models))
    outcome = run(toy_dataset, tmp_path, "_cheat23_models")
    assert outcome.status == "failed", outcome
    assert not (models / "model-0123456789abcdef01234567.json").exists()


def test_a_pickle_on_the_channel_is_refused_never_run(toy_dataset, tmp_path, monkeypatch):
    mark = tmp_path / "mark"
    monkeypatch.setenv(cheats.MARK_ENV, str(mark))
    outcome = run(toy_dataset, tmp_path, "_cheat23_pickle")
    assert outcome.status == "failed" and "reply was refused" in outcome.error, outcome.error
    assert not mark.exists()
    assert record_of(tmp_path, outcome)["status"] == "failed"


def test_a_fit_report_must_be_plain_json(toy_dataset, tmp_path, monkeypatch):
    mark = tmp_path / "mark"
    monkeypatch.setenv(cheats.MARK_ENV, str(mark))
    outcome = run(toy_dataset, tmp_path, "_cheat23_report")
    assert outcome.status == "failed" and "fit_report" in outcome.error and "plain JSON" in outcome.error
    assert not mark.exists()


def test_a_huge_declared_array_fails_only_its_run(toy_dataset, tmp_path):
    outcome = run(toy_dataset, tmp_path, "_cheat23_huge")
    assert outcome.status == "failed" and "(10000000, 10000000)" in outcome.error, outcome.error
    after = run(toy_dataset, tmp_path, "_test_centroid")  # the evaluator goes on
    assert after.status == "ok"


def test_an_error_reply_without_fields_fails_only_its_run(toy_dataset, tmp_path):
    outcome = run(toy_dataset, tmp_path, "_cheat23_bad_error")
    assert outcome.status == "failed" and "error reply without a valid" in outcome.error, outcome.error


def test_a_half_written_frame_cannot_hang_the_run(toy_dataset, tmp_path):
    start = time.monotonic()
    outcome = run(toy_dataset, tmp_path, "_cheat23_half_frame", time_limit_s=6)
    assert outcome.status == "failed" and "time limit of 6 s" in outcome.error, outcome.error
    assert time.monotonic() - start < 60


def test_the_worker_cannot_signal_the_evaluator(toy_dataset, tmp_path, monkeypatch):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        monkeypatch.setenv(cheats.PID_ENV, str(os.getpid()))
        outcome = run(toy_dataset, tmp_path, "_cheat23_signal")
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    if choose()[0] == "audit":
        pytest.skip("without namespaces or Landlock a worker can signal the evaluator (docs/sealed.md)")
    assert not received
    if outcome.status == "failed":  # the audit hook stopped it at the evaluator's /proc entry
        assert "stopped the run" in outcome.error, outcome.error
    else:
        assert "sent" not in record_of(tmp_path, outcome)["fit_report"]["signals"]


def test_nothing_a_worker_starts_outlives_its_run(toy_dataset, tmp_path):
    outcome = run(toy_dataset, tmp_path, "_cheat23_orphan")
    assert outcome.status == "ok", outcome.error
    for zygote in list(sealed_runs._ZYGOTES.values()):  # noqa: SLF001 - the test looks at the running zygotes
        if zygote.process is None:
            continue
        left = [pid for pid in descendants(zygote.process.pid)
                if "benchmark.sealed.zygote" in _cmdline(pid) and "bwrap" not in _cmdline(pid).split(" ")[0]]
        assert len(left) <= 1, f"processes left below the zygote: {left}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
