"""Run plate units on ``bench sweep``'s executors: ``local`` (worker processes), ``debug`` (this process), ``slurm``.

:class:`ExecutorOptions` is the :class:`~benchmark.datasets.jump.units.UnitRunner` that
``bench data prepare jump --executor`` hands to :func:`~benchmark.datasets.jump.prepare_jump`.
The executor names, their check and the SLURM settings are shared with ``bench sweep``
(:mod:`benchmark.slurm.jobs`, :mod:`benchmark.slurm.config`). ``local`` runs the
units in up to ``jobs`` worker processes started with ``spawn``; a worker that dies (killed,
out of memory) fails the plates it had not finished, which the next run redoes. ``debug``
runs them one after the other in this process (breakpoints work). ``slurm`` submits one
array task per plate (:mod:`benchmark.datasets.jump.slurm`). Each finished unit prints one
line; the outcomes come back in finishing order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ...slurm.jobs import check_executor
from ...slurm.config import SlurmConfig, require_submitit
from .units import FAILED, PlateOutcome, PlateUnit, run_plate_unit

OnOutcome = Callable[[PlateOutcome], None]


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the plate units run: ``local`` (``jobs`` worker processes), ``debug`` (this process, one after
    the other) or ``slurm`` (one array task per plate with the ``slurm`` settings; ``wait=False`` returns right
    after submitting). An unknown executor or ``jobs < 1`` is an error listing what is valid."""

    executor: str = "local"
    jobs: int = 1
    slurm: SlurmConfig | None = None
    wait: bool = True

    def __post_init__(self) -> None:
        check_executor(self.executor, self.jobs)

    def run(self, units: Sequence[PlateUnit], out: Path, console: Console) -> list[PlateOutcome]:
        """:func:`run_units` with these options."""
        return run_units(units, self, out, console)


def run_units(units: Sequence[PlateUnit], run: ExecutorOptions, out: Path, console: Console) -> list[PlateOutcome]:
    """Run ``units`` on ``run.executor``; print one line per finished plate; the outcomes.

    With ``slurm`` and ``run.wait`` False, returns right after submitting (no outcomes).
    """
    done: list[PlateOutcome] = []
    width = len(str(len(units)))

    def report(outcome: PlateOutcome) -> None:
        done.append(outcome)
        style = "red" if outcome.status == FAILED else "green"
        console.print(Text(f"[{len(done):>{width}}/{len(units)}] ") + Text(outcome.line(), style=style),
                      highlight=False, soft_wrap=True)

    if not units:
        return []
    where = {"local": f"{min(run.jobs, len(units))} worker process(es)", "debug": "this process, one after the other",
             "slurm": "one SLURM array task each"}[run.executor]
    console.print(f"{len(units)} plate(s) to prepare, one unit each, on --executor {run.executor} ({where})",
                  highlight=False)
    if run.executor == "debug":
        run_debug(units, report, console)
    elif run.executor == "local":
        run_local(units, run.jobs, report)
    else:
        require_submitit()
        from .slurm import run_slurm

        run_slurm(units, run.slurm, out, run.wait, report, console)
    return done


def run_debug(units: Sequence[PlateUnit], on_outcome: OnOutcome, console: Console) -> None:
    """One unit after the other in this process."""
    for i, unit in enumerate(units, 1):
        console.print(f"plate {i}/{len(units)}: {unit.plate_id} ({len(unit.sites)} sites)", highlight=False)
        on_outcome(run_plate_unit(unit))


def run_local(units: Sequence[PlateUnit], jobs: int, on_outcome: OnOutcome) -> None:
    """The units in up to ``jobs`` worker processes (``spawn``: fresh interpreters)."""
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(units)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_plate_unit, unit): unit for unit in units}
        for future in as_completed(futures):
            on_outcome(_outcome(future, futures[future]))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _outcome(future: Future, unit: PlateUnit) -> PlateOutcome:
    try:
        return future.result()
    except BrokenProcessPool:
        return PlateOutcome(unit.plate_id, FAILED, error="its worker process died before reporting (killed or out of "
                                                         "memory?); the next run redoes the plate")


__all__ = ["ExecutorOptions", "run_debug", "run_local", "run_units"]
