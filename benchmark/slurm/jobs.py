"""SLURM jobs through submitit, shared by ``bench sweep`` and ``bench data prepare jump``: the executor, the
``jobs.json`` that remembers which job runs which unit, re-attaching to jobs still queued or running, and why
a job failed. What a job runs is each caller's (:mod:`benchmark.sweep.slurm`, :mod:`benchmark.datasets.jump.slurm`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from ..errors import BenchError, UnknownNameError
from .config import SlurmConfig

EXECUTORS = ("local", "debug", "slurm")


def check_executor(executor: str, jobs: int) -> None:
    """An unknown executor lists the valid ones; ``jobs`` must be at least 1."""
    if executor not in EXECUTORS:
        raise UnknownNameError("executor", executor, EXECUTORS)
    if jobs < 1:
        raise BenchError(f"--jobs must be at least 1, got {jobs}")


ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                           "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "READY"})
"""SLURM job states of a job that has not ended yet (it may still write its unit's record)."""
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})
JOBS_FILE = "jobs.json"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exhausted|Interrupt|Exit)\b: .+")


class RetriesExhausted(BenchError):
    """A unit was preempted or timed out more often than ``max_retries`` allows."""


def folder_of(config: SlurmConfig, logs: Path) -> Path:
    """submitit's folder: the configured one, else ``<logs>/slurm``."""
    return (Path(config.folder) if config.folder else Path(logs) / "slurm").absolute()


def make_executor(config: SlurmConfig, folder: Path) -> submitit.SlurmExecutor:
    """A submitit SLURM executor for ``config`` (an error naming what is missing when this is no SLURM host)."""
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # pickles and logs never belong in a commit
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=config.max_retries, python=config.python)
    except RuntimeError as exc:
        raise BenchError(f"--executor slurm found no SLURM here ({exc}); run the command on a login node of the "
                         "cluster, or use --executor local") from None
    try:
        executor.update_parameters(**config.executor_parameters())
    except ValueError as exc:
        raise BenchError(f"submitit refused the SLURM settings: {str(exc).splitlines()[0]}") from None
    return executor


# -- jobs.json ------------------------------------------------------------------------------------------------

def read_jobs(folder: Path) -> dict[str, str]:
    """:func:`job_key` -> SLURM job id of the units submitted from ``folder`` before (empty when none)."""
    path = folder / JOBS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise BenchError(f"{path} is not valid JSON; delete it and rerun (a unit whose job still runs is then "
                         "submitted again; its record is written whole either way)") from None
    return {str(k): str(v) for k, v in data.items()}


def write_jobs(folder: Path, jobs: dict[str, str]) -> None:
    """Remember which job runs which unit (merged into what ``folder`` already holds)."""
    from ..records import write_text_atomic

    write_text_atomic(folder / JOBS_FILE, json.dumps({**read_jobs(folder), **jobs}, indent=1, sort_keys=True))


# -- attach, failures ------------------------------------------------------------------------------------------

def attach(units: Sequence[Any], folder: Path, key: Callable[[Any], str]) -> dict[Any, Any]:
    """The units whose job from an earlier submission is still queued or running, with that job (``key``: how
    ``jobs.json`` names a unit)."""
    known = read_jobs(folder)
    candidates = {u: submitit.SlurmJob(folder=folder, job_id=known[key(u)]) for u in units if key(u) in known}
    if not candidates:
        return {}
    watcher = submitit.SlurmJob.watcher
    for job in candidates.values():
        watcher.register_job(job.job_id)
    watcher.update()  # one sacct call for all of them
    return {u: job for u, job in candidates.items()
            if not job.paths.result_pickle.exists() and watcher.get_state(job.job_id, mode="cache") in ACTIVE_STATES}


def failure_reason(text: str) -> str:
    """The line of a submitit error that says why: the job's exception, or that it left no output."""
    lines = [line for line in text.splitlines() if line.strip()]
    raised = [line.strip() for line in lines if _EXCEPTION_LINE.match(line)]
    if raised:
        return raised[-1]
    return " ".join(line.strip() for line in lines[:2]) or "no error message"
