"""Run a planned sweep on one of the executors: ``local`` (default), ``debug`` or ``slurm``.

Before any unit starts, :func:`run_sweep` says how long the units left to run are expected to take
(:mod:`benchmark.sweep.clock`) and prepares, in this process, what every unit shares and would otherwise
make on first use (the severity scenario's twin datasets: :func:`benchmark.scenarios.severity.prepare_twins`);
at the end it measures the sweep's wall time and appends it to ``<logs>/sweeps.jsonl`` (not with ``debug``).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from .clock import append_clock, expected
from .local import run_debug, run_local
from .plan import Plan
from .progress import SweepProgress
from ..slurm.config import SUBMITIT_REQUIREMENT, SlurmConfig, require_submitit
from ..slurm.jobs import EXECUTORS, check_executor

def run_sweep(plan: Plan, executor: str = "local", *, jobs: int = 1, logs: Path = Path("logs"),
              slurm: SlurmConfig | None = None, wait: bool = True, fresh: bool = False,
              console: Console | None = None) -> SweepProgress:
    """Run ``plan``'s units on ``executor`` and return the progress (results, counts, the summary to print).

    ``jobs`` is the number of worker processes of ``local`` (``fresh``: a new one for every unit); ``logs``
    the folder of the log files (and of submitit's folder ``<logs>/slurm`` unless ``slurm.folder`` says
    otherwise); ``wait=False`` makes ``slurm`` return right after submitting.
    """
    check_executor(executor, jobs)
    started = time.time()
    progress = SweepProgress(plan.total, plan.finished, console, title=f"bench sweep ({executor})")
    if not plan.todo:
        return progress
    at_once = {"debug": 1, "local": jobs}.get(executor) or (slurm or SlurmConfig()).array_parallelism
    progress.expected = expected(plan, at_once)
    progress.console.print(progress.expected.line(), highlight=False, soft_wrap=True)
    prepare_shared(plan)
    if executor == "debug":
        run_debug(plan, progress)  # no live table: the protocol's lines and breakpoints own the terminal
    elif executor == "local":
        with progress:
            run_local(plan, progress, jobs, logs, fresh)
    else:
        require_submitit()
        from .slurm import run_slurm

        with progress:
            run_slurm(plan, progress, slurm or SlurmConfig(), logs, wait)
    if executor == "local" or (executor == "slurm" and wait):  # debug writes no file
        append_clock(logs, plan, executor, started, progress.elapsed(), progress.expected, progress.counts())
    return progress


def prepare_shared(plan: Plan) -> None:
    """Make, in this process and before any unit starts, what the units would otherwise each make on first use:
    the severity scenario's twins of the dataset (rendered once, with progress on stderr; the units open them)."""
    if "severity" in plan.scenarios and plan.data is not None:
        from ..scenarios.severity import prepare_twins

        prepare_twins(plan.data)


__all__ = ["EXECUTORS", "SUBMITIT_REQUIREMENT", "check_executor", "prepare_shared", "run_sweep"]
