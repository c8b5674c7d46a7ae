"""Executors on this machine: ``local`` (N worker processes) and ``debug`` (in this process).

``local`` runs the units in up to ``jobs`` worker processes started with multiprocessing ``spawn``
(fresh interpreters: nothing of this process's state but ``sys.path`` and the environment goes
along), in the plan's order and never before the unit each waits for
(:class:`~benchmark.sweep.schedule.Schedule`). Each unit is one ``run_protocol`` call of its own,
whose method runs in a sealed worker of its own, as in ``bench run``; a worker process takes one unit
after another (as ``bench run`` takes one run after another), so torch's import and the sealed
forkserver's start are paid once per worker, not once per unit (about 20 s per unit on a loaded
2-core machine). ``fresh=True`` starts a new worker process for every unit instead.

A unit's output goes to its own log file; what its sealed worker writes directly (a method's own
prints) goes to the log of the worker process it ran in (``worker-<n>.log``), which started the
forkserver the sealed workers are forked from. A worker that dies while running a unit (killed, out
of memory) makes that unit a failure naming its exit code and log; a new worker takes the next unit.
``debug`` runs the same units one after the other in this process, printing as it goes, so a
breakpoint in the protocol is hit (the method itself still runs in its sealed worker).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from .grid import Unit
from .plan import Plan
from .progress import SweepProgress
from .schedule import Schedule
from .unit import UnitResult, run_unit

_STOP_GRACE_S = 10.0  # after Ctrl-C, how long a worker gets to stop before it is terminated


def log_path(logs: Path, unit: Unit) -> Path:
    """Where the output of ``unit`` goes: ``<logs>/<method>-<split>-fold<k>-seed<s>.log``."""
    return Path(logs) / f"{unit.slug}.log"


def _output_to(path: str, append: bool) -> None:
    """Send this process's file descriptors 1 and 2 (and so its children's) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _worker_process(conn: Connection, worker_log: str, fresh: bool) -> None:
    """A worker: start the sealed forkserver, then run each unit it is sent until it is sent None."""
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    _output_to(worker_log, append=True)
    from ..sealed.runs import warm_up

    warm_up()  # the forkserver (and the sealed workers forked from it) write to the worker's log
    while True:
        message = conn.recv()
        if message is None:
            break
        unit, log_file = message
        _output_to(log_file, append=False)
        try:
            result = run_unit(unit, log=print)
        except BaseException as exc:  # noqa: BLE001 - a crash of the unit is its result, reported to the parent
            traceback.print_exc()
            result = UnitResult(unit, "failed", error=f"the unit crashed: {type(exc).__name__}: {exc}")
        _output_to(worker_log, append=True)
        conn.send(result)
        if fresh:
            break
    conn.close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    log: Path
    unit: Unit | None = None
    unit_log: Path | None = None


def run_local(plan: Plan, progress: SweepProgress, jobs: int, logs: Path, fresh: bool = False) -> list[UnitResult]:
    """Run the plan's units in up to ``jobs`` worker processes; one result per unit, in finishing order."""
    ctx = multiprocessing.get_context("spawn")
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    schedule: Schedule[Unit] = Schedule(plan.todo, plan.waits)
    workers: list[_Worker] = []
    results: list[UnitResult] = []
    started = 0

    def start_worker() -> _Worker:
        nonlocal started
        started += 1
        mine, theirs = ctx.Pipe()
        log = logs / f"worker-{started}.log"
        proc = ctx.Process(target=_worker_process, args=(theirs, str(log), fresh), name=f"sweep-worker-{started}")
        proc.start()
        theirs.close()
        worker = _Worker(proc, mine, log)
        workers.append(worker)
        return worker

    try:
        while schedule.pending or any(w.unit is not None for w in workers):
            while True:
                idle = next((w for w in workers if w.unit is None), None)
                if idle is None and len(workers) >= jobs:
                    break
                unit = schedule.take()
                if unit is None:
                    break
                worker = idle or start_worker()
                worker.unit, worker.unit_log = unit, log_path(logs, unit)
                worker.conn.send((unit, str(worker.unit_log)))
                progress.mark_running(unit)
            busy = [w for w in workers if w.unit is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5))
            for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                unit = worker.unit
                result = _receive(worker)
                if result is None and worker.process.is_alive():
                    continue  # the sentinel of a worker still closing down: its result comes next time
                schedule.finish(unit)
                results.append(result)
                progress.mark_finished(result)
                worker.unit = None
                if fresh or not worker.process.is_alive():
                    _retire(worker)
                    workers.remove(worker)
        for worker in workers:
            worker.conn.send(None)
        for worker in workers:
            _retire(worker)
    except BaseException:
        _stop(workers)
        raise
    return results


def _receive(worker: _Worker) -> UnitResult | None:
    """The result the worker sent, a failure naming its exit code when it died without one, or None (not yet)."""
    unit, unit_log = worker.unit, worker.unit_log
    assert unit is not None and unit_log is not None
    try:
        if worker.conn.poll():
            result: UnitResult = worker.conn.recv()
            return result if result.status != "failed" else replace(result, log=str(unit_log))
    except (EOFError, OSError):
        pass
    if worker.process.is_alive():
        return None
    worker.process.join()
    return UnitResult(unit, "failed", error=f"the unit's process exited with code {worker.process.exitcode} before "
                      "reporting (killed or out of memory?)", log=str(unit_log))


def _retire(worker: _Worker) -> None:
    worker.process.join(_STOP_GRACE_S)
    if worker.process.is_alive():
        worker.process.terminate()
        worker.process.join()
    worker.conn.close()


def _stop(workers: list[_Worker]) -> None:
    """After an interrupt: give the workers (which got the same Ctrl-C) a moment, then terminate them."""
    deadline = time.monotonic() + _STOP_GRACE_S
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join()
        worker.conn.close()


def run_debug(plan: Plan, progress: SweepProgress) -> list[UnitResult]:
    """Run the plan's units one after the other in this process, printing the protocol's lines."""
    schedule: Schedule[Unit] = Schedule(plan.todo, plan.waits)
    results = []
    while schedule.pending:
        unit = schedule.take()
        assert unit is not None, "a sequential schedule always has a ready unit"
        progress.mark_running(unit)
        result = run_unit(unit, log=lambda line: progress.console.print(line, markup=False, highlight=False,
                                                                        soft_wrap=True), verbose=True)
        schedule.finish(unit)
        results.append(result)
        progress.mark_finished(result)
    return results


__all__ = ["log_path", "run_debug", "run_local"]
