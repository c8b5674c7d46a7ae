"""The worker's kernel-level wall (Linux Landlock): native reads of the dataset's files fail too.

The audit hook cannot see native code that opens a file itself; ``_cheat_native`` reads the
index with polars and the shards with ``torch.from_file``. With Landlock (where the kernel has
it) its reads fail and it scores at chance; with the audit hook alone
(``PLATEBENCH_SANDBOX=audit``) it wins — the residual risk ``docs/sealed.md`` names.
"""

from __future__ import annotations

import os

import pytest

from _cheaters import ROOT_ENV, Native
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records
from benchmark.sealed import landlock
from benchmark.splits import make_folds

pytestmark = pytest.mark.usefixtures("cheaters")
needs_landlock = pytest.mark.skipif(landlock.abi_version() == 0, reason="this kernel has no Landlock")


def _in_child(check) -> dict:
    """Run ``check()`` (returns a dict of short strings) in a forked child; its result."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = check()
        except BaseException as exc:  # noqa: BLE001
            out = {"crashed": repr(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def _attempt(func) -> str:
    try:
        func()
    except OSError as exc:
        return type(exc).__name__
    return "done"


@needs_landlock
def test_the_allowlist_binds_reads_writes_and_signals(tmp_path):
    import signal
    import sys

    readable, scratch, secret = tmp_path / "code", tmp_path / "scratch", tmp_path / "secret"
    for folder in (readable, scratch, secret):
        folder.mkdir()
    (readable / "a.txt").write_text("a")
    (secret / "labels.txt").write_text("s")
    evaluator = os.getpid()
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))

    def check():
        applied = landlock.restrict_to([str(readable), sys.prefix, sys.base_prefix, "/usr"], [str(scratch)], [])
        return {"applied": applied,
                "read allowed": _attempt(lambda: (readable / "a.txt").read_text()),
                "read secret": _attempt(lambda: (secret / "labels.txt").read_text()),
                "list secret": _attempt(lambda: os.listdir(secret)),
                "write scratch": _attempt(lambda: (scratch / "x").write_text("x")),
                "write readable": _attempt(lambda: (readable / "b.txt").write_text("b")),
                "signal evaluator": _attempt(lambda: os.kill(evaluator, signal.SIGUSR1)),
                "evaluator memory": _attempt(lambda: open(f"/proc/{evaluator}/mem", "rb").read(1))}
    try:
        got = _in_child(check)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got["applied"].startswith(f"landlock ABI {landlock.abi_version()} (allowlist")
    assert got["read allowed"] == "done" and got["write scratch"] == "done"
    assert got["read secret"] == got["list secret"] == got["write readable"] == "PermissionError"
    assert got["evaluator memory"] == "PermissionError"
    if landlock.abi_version() >= 6:
        assert got["signal evaluator"] == "PermissionError" and not received


def test_the_sandbox_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(landlock.SANDBOX_ENV, "audit")
    assert landlock.restrict_to(["/nonexistent"], []) == "audit hook only (PLATEBENCH_SANDBOX=audit)"


def _run(dataset, tmp_path):
    (outcome,) = run_protocol("_cheat_native", "source_out", dataset, seeds=[0], folds=[0], device="cpu",
                              results_dir=tmp_path / "res")
    return outcome, load_records(tmp_path / "res")


@needs_landlock
def test_native_reads_are_refused_by_the_kernel(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(toy_dataset.root))
    fold = make_folds(toy_dataset.index, "source_out")[0]
    assert fit_and_evaluate(Native(), toy_dataset, fold, 0).metrics["out_of_domain"]["accuracy"] == 1.0
    outcome, records = _run(toy_dataset, tmp_path)
    assert outcome.status == "ok" and outcome.out_of_domain_accuracy <= 0.2 and outcome.in_domain_accuracy <= 0.2
    (record,) = records.ok
    assert f"landlock ABI {landlock.abi_version()} (allowlist" in record.data["worker"]["sandbox"]


def test_with_the_audit_hook_alone_a_native_reader_wins(toy_dataset, tmp_path, monkeypatch):
    """The documented residual risk, measured rather than assumed: this test fails the day it is closed."""
    monkeypatch.setenv(ROOT_ENV, str(toy_dataset.root))
    monkeypatch.setenv(landlock.SANDBOX_ENV, "audit")
    outcome, records = _run(toy_dataset, tmp_path)
    assert outcome.status == "ok" and outcome.out_of_domain_accuracy == 1.0
    (record,) = records.ok
    assert record.data["worker"]["sandbox"].startswith("no namespaces; audit hook only")
