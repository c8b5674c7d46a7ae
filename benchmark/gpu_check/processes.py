"""Running one stage: in a child process of its own group with its time box (started, waited for, killed past the
box, its JSON result read back), the child's side of that, or in this process for the CPU smoke test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .sizes import CPU_THREADS, MODES, Sizes
from .stages import STAGES, StageResult


def _write_json(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, path)


def run_child(stage: str, mode: str, work: Path, result_path: Path, dataset_root: str | None,
              time_box: float) -> int:
    """Run one stage and write its result as JSON (the parent reads it; a stage may write partial results first)."""
    sizes = MODES[mode]
    if sizes.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the smoke test never touches a GPU, even where there is one
        import torch

        torch.set_num_threads(CPU_THREADS)
    result = STAGES[stage][1](sizes, work, dataset_root=dataset_root, time_box=time_box,
                              partial=lambda r: _write_json(result_path, r))
    _write_json(result_path, result)
    return 0


def _command(stage: str, mode: str, work: Path, result: Path, time_box: float, dataset_root: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "benchmark.gpu_check", "--stage", stage, "--mode", mode, "--workdir", str(work),
           "--result", str(result), "--time-box", f"{time_box:.0f}"]
    return cmd + (["--dataset-root", dataset_root] if dataset_root else [])


def kill(proc: subprocess.Popen) -> None:
    """Kill a stage's whole process group (its loader workers and sealed workers too) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def finish(stage: StageResult, proc: subprocess.Popen, result: Path, timeout: float, start: float) -> StageResult:
    """Wait up to ``timeout`` for a stage's process (killing its whole group past it) and read its result."""
    try:
        _, err = proc.communicate(timeout=max(timeout, 1))
    except BaseException as exc:  # past the box, or this run is being stopped (SIGTERM, Ctrl-C): end the stage
        kill(proc)
        if not isinstance(exc, subprocess.TimeoutExpired):
            stage.status = "interrupted"
            raise
        stage.status, stage.error = "timed out", f"killed after its time box of {timeout:.0f} s"
        if result.is_file():  # what it had finished
            stage.result = json.loads(result.read_text())
    else:
        if proc.returncode == 0 and result.is_file():
            stage.status, stage.result = "ok", json.loads(result.read_text())
        else:
            tail = (err or "").strip().splitlines()[-6:]
            stage.status, stage.error = "failed", f"exit code {proc.returncode}: " + " | ".join(tail)[-800:]
    stage.seconds = round(time.perf_counter() - start, 1)
    return stage


def start(stage: str, mode: str, work: Path, time_box: float, dataset_root: str | None = None
          ) -> tuple[subprocess.Popen, Path]:
    """Start a stage's child process in a new session (its own process group); return it and its result file."""
    result = work / f"{stage}.json"
    proc = subprocess.Popen(_command(stage, mode, work, result, time_box, dataset_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, result


def run_in_process(stage: StageResult, sizes: Sizes, work: Path, timeout: float, dataset_root: str | None) -> None:
    """Run a stage in this process (the CPU smoke test's shortcut): no isolation, no time box, errors recorded."""
    import torch

    begun, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        stage.result = STAGES[stage.name][1](sizes, work, dataset_root=dataset_root, time_box=timeout)
        stage.status = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing stage is a result, the others go on
        stage.status, stage.error = "failed", f"{type(exc).__name__}: {exc}"[:800]
    finally:
        torch.set_num_threads(threads)
    stage.seconds = round(time.perf_counter() - begun, 1)
