"""Fault containment: a method that raises, crashes, hangs or runs out of memory fails only its own run.

The faulty methods below fail for seed 0 and are honest for seed 1, so each test also
shows that the next run goes on. They are defined at module level, where the sealed worker finds
them by their class names, and registered while this module's tests run (fixture ``faults``).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time

import numpy as np
import pytest

from _toy_methods import Centroid
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records
from benchmark.registry import registered


class Faulty(Centroid):
    description = "test: fails for seed 0"

    def fault(self) -> None:
        raise NotImplementedError

    def fit(self, train, val, seed):
        if seed == 0:
            self.fault()
        return super().fit(train, val, seed)


class Raises(Faulty):
    name = "_fault_raises"

    def fault(self):
        raise KeyError("no such column 'dose'")


class Aborts(Faulty):
    name = "_fault_abort"

    def fault(self):
        os.abort()


class Segfaults(Faulty):
    name = "_fault_segfault"

    def fault(self):
        faulthandler.disable()
        faulthandler._sigsegv()


class Exits(Faulty):
    name = "_fault_exit"

    def fault(self):
        os._exit(3)


class SysExit(Faulty):
    name = "_fault_sys_exit"

    def fault(self):
        raise SystemExit(4)


class Hangs(Faulty):
    name = "_fault_hang"

    def fault(self):
        time.sleep(120)


class Hungry(Faulty):
    name = "_fault_memory"

    def fault(self):
        self.hoard_ = np.ones(3 * 2**30 // 8)  # 3 GB


class Killed(Faulty):
    name = "_fault_killed"

    def fault(self):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does


class PredictCrashes(Centroid):
    name = "_fault_predict_abort"
    description = "test: aborts in predict"

    def predict(self, images):
        os.abort()


FAULTS = (Raises, Aborts, Segfaults, Exits, SysExit, Hangs, Hungry, Killed, PredictCrashes)


@pytest.fixture(scope="module")
def faults():
    with registered(*FAULTS):
        yield FAULTS


pytestmark = pytest.mark.usefixtures("toy_methods", "faults")


def run(dataset, tmp_path, method, seeds=(0, 1), **kw):
    return run_protocol(method, "source_out", dataset, seeds=list(seeds), folds=[0], device="cpu",
                        results_dir=tmp_path / "res", **kw)


@pytest.mark.parametrize("method, message", [
    ("_fault_raises", "fit raised KeyError: \"no such column 'dose'\""),
    ("_fault_abort", "fit: the worker process crashed (SIGABRT, aborted); only this run fails"),
    ("_fault_segfault", "fit: the worker process crashed (SIGSEGV, segmentation fault)"),
    ("_fault_exit", "fit: the worker process exited with code 3 without answering (did the method call os._exit"),
    ("_fault_sys_exit", "fit raised SystemExit: 4"),
    ("_fault_killed", "fit: the worker process was killed (out of memory?) by SIGKILL"),
])
def test_a_failing_worker_fails_its_own_run_with_the_reason_and_the_next_goes_on(toy_dataset, tmp_path, method,
                                                                                 message):
    first, second = run(toy_dataset, tmp_path, method)
    assert first.status == "failed" and message in first.error, first.error
    assert second.status == "ok"
    (failed,) = load_records(tmp_path / "res").failed
    assert message in failed.data["error"] and failed.data["worker"]["isolation"] == "sealed"
    assert (failed.data["traceback"] is not None) == (method in ("_fault_raises", "_fault_sys_exit"))
    if method == "_fault_raises":
        assert "KeyError" in failed.data["traceback"] and "in fault" in failed.data["traceback"]


def test_a_run_past_its_time_limit_fails_alone(toy_dataset, tmp_path):
    start = time.perf_counter()
    first, second = run(toy_dataset, tmp_path, "_fault_hang", time_limit_s=2)
    assert first.status == "failed" and second.status == "ok"
    assert ("fit: the run exceeded its time limit of 2 s and its worker was stopped; raise the limit with "
            "--time-limit SECONDS") in first.error
    assert 2 <= first.seconds < 10 and time.perf_counter() - start < 30


def test_a_run_past_its_memory_limit_fails_alone_and_says_so(toy_dataset, tmp_path):
    first, second = run(toy_dataset, tmp_path, "_fault_memory", memory_limit_gb=2)
    assert first.status == "failed" and second.status == "ok"
    assert "fit raised MemoryError" in first.error
    assert "(the worker's memory limit is 2 GB; raise it with --memory-limit)" in first.error
    record = load_records(tmp_path / "res").ok[0].data
    assert record["worker"]["memory_limit_gb"] == 2


def test_a_crash_in_predict_names_the_plate(toy_dataset, tmp_path):
    (only,) = run(toy_dataset, tmp_path, "_fault_predict_abort", seeds=(0,))
    assert only.status == "failed"
    assert "adapt/predict on plate src0_b0_p0: the worker process crashed (SIGABRT" in only.error


def test_a_method_defined_inside_a_function_cannot_be_sealed_and_says_what_to_do(toy_dataset, tmp_path):
    from benchmark import registry

    class Local(Centroid):
        name = "_fault_local"

    registry.register_method(Local)
    try:
        (only,) = run(toy_dataset, tmp_path, "_fault_local", seeds=(0,))
    finally:
        registry.unregister_method("_fault_local")
    assert only.status == "failed"
    assert "is defined inside a function" in only.error and "define it at module level" in only.error


@pytest.mark.parametrize("kw, message", [({"time_limit_s": 0}, "the time limit must be positive, got 0 s"),
                                         ({"memory_limit_gb": -1}, "the memory limit must be positive, got -1 GB")])
def test_limits_must_be_positive(toy_dataset, tmp_path, kw, message):
    from benchmark.errors import BenchError

    with pytest.raises(BenchError, match=message):
        run(toy_dataset, tmp_path, "_test_centroid", **kw)


def test_bench_run_time_and_memory_limits(toy_dataset, tmp_path):
    from typer.testing import CliRunner

    from benchmark.cli import app

    base = ["run", "-s", "source_out", "--dataset", str(toy_dataset.root), "--results", str(tmp_path / "res"),
            "--device", "cpu", "--folds", "0", "--seeds", "0,1", "-q"]
    result = CliRunner().invoke(app, [*base, "-m", "_fault_hang", "--time-limit", "2"])
    assert result.exit_code == 1
    assert "1 done, 0 skipped (already recorded), 1 failed" in result.stdout
    assert "exceeded its time limit of 2 s" in result.stderr
    result = CliRunner().invoke(app, [*base, "-m", "_fault_memory", "--memory-limit", "2", "--force"])
    assert result.exit_code == 1 and "the worker's memory limit is 2 GB" in result.stderr
    records = load_records(tmp_path / "res")
    assert {r.data["worker"]["memory_limit_gb"] for r in records.ok + records.failed} >= {2.0}


ORPHAN_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
import test_sealed_faults
from benchmark.registry import register_method
register_method(test_sealed_faults.Hangs)
from benchmark.datasets.dataset import open_dataset
from benchmark.protocol.loop import run_protocol
run_protocol("_fault_hang", "source_out", open_dataset({root!r}), seeds=[0], folds=[0], device="cpu",
             results_dir={results!r})
"""


def test_a_killed_evaluator_leaves_no_worker_behind(toy_dataset, tmp_path):
    """SIGTERM to `bench run` ends its zygote (PDEATHSIG, and bwrap's --die-with-parent), and the zygote's end kills
    the worker (PDEATHSIG; in bubblewrap the whole PID namespace ends with it)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = ORPHAN_SCRIPT.format(tests=str(Path(__file__).parent), root=str(toy_dataset.root),
                                  results=str(tmp_path / "res"))
    evaluator = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.time() + 240  # the zygote imports torch first (slow on a loaded 2-core machine)
        workers: list[int] = []
        while time.time() < deadline and not workers:  # wait for the worker to be fitting (it hangs in fit)
            time.sleep(0.5)
            workers = _workers_below(evaluator.pid)
        assert workers, "the worker never started"
        evaluator.send_signal(signal.SIGTERM)
        evaluator.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") and not _zombie(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(os.path.exists(f"/proc/{pid}") and not _zombie(pid) for pid in workers)
    finally:
        if evaluator.poll() is None:
            os.killpg(evaluator.pid, signal.SIGKILL)


def _workers_below(evaluator: int) -> list[int]:
    """The sealed workers below the evaluator: processes forked by its zygote (a zygote's child running the
    zygote's program, which is not the zygote itself)."""
    from benchmark.sealed.zygote import descendants

    def python_zygote(pid: int) -> bool:
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            return False
        return b"benchmark.sealed.zygote" in argv and b"bwrap" not in argv[0]

    def parent(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return -1

    return [pid for pid in descendants(evaluator) if python_zygote(pid) and python_zygote(parent(pid))]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
