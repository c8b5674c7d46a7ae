"""Run a planned sweep on one of the executors: ``local`` (default), ``debug`` or ``slurm``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

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
    progress = SweepProgress(plan.total, plan.finished, console, title=f"bench sweep ({executor})")
    if not plan.todo:
        return progress
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
    return progress


__all__ = ["EXECUTORS", "SUBMITIT_REQUIREMENT", "check_executor", "run_sweep"]
