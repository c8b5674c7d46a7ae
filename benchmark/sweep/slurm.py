"""``bench sweep --executor slurm``: the units as SLURM job arrays through submitit.

The units that wait for nothing go in one job array (``executor.map_array``, one array task per
unit, at most ``array_parallelism`` at once); the units that start from a cached ERM model (AdaBN,
TENT, DeYO, ROID next to ERM) go in a second array submitted with ``--dependency=afterany:<first>``,
so they find the model ERM cached. Each task runs :class:`UnitTask`, a submitit ``Checkpointable``:
when SLURM preempts it or its time runs out, submitit requeues it (the run starts again; a record is
only ever written whole), at most ``max_retries`` times; after that the unit is reported failed.

The sweep then follows the jobs (one ``sacct`` call per look) in the live table until every unit has
ended, or, with ``wait=False``, returns right after submitting. ``<folder>/jobs.json`` remembers
which job runs which unit (by record path and settings): a later ``bench sweep`` with the same options skips what
has an ok record, follows the units whose jobs are still queued or running instead of submitting them
again, and submits the rest. Ctrl-C stops following, never the jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable, DelayedSubmission

from ..errors import BenchError
from .grid import Unit
from .plan import Plan
from .progress import SweepProgress
from ..slurm.config import SlurmConfig
from .unit import UnitResult, run_unit

ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                           "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "READY"})
"""SLURM job states of a job that has not ended yet (it may still write its unit's record)."""
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})
JOBS_FILE = "jobs.json"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exhausted|Interrupt|Exit)\b: .+")


class RetriesExhausted(BenchError):
    """A unit was preempted or timed out more often than ``max_retries`` allows."""


class UnitTask(Checkpointable):
    """What one array task runs: the unit, through :func:`run_unit`; requeued when preempted or out of time.

    ``checkpoint`` (called by submitit on SLURM's warning signal) hands SLURM the same unit again with one
    attempt more, up to ``max_retries``, and raises :class:`RetriesExhausted` after that, which ends the
    job as failed with that message.
    """

    def __init__(self, max_retries: int, attempt: int = 0):
        self.max_retries, self.attempt = max_retries, attempt

    def __call__(self, unit: Unit) -> UnitResult:
        print(f"bench sweep unit {unit.label} (attempt {self.attempt + 1} of at most {self.max_retries + 1}), "
              f"record {unit.record}", flush=True)
        return run_unit(unit, log=lambda line: print(line, flush=True))

    def checkpoint(self, unit: Unit) -> DelayedSubmission:  # type: ignore[override]
        if self.attempt >= self.max_retries:
            raise RetriesExhausted(f"{unit.label} was preempted or ran out of time {self.attempt + 1} times "
                                   f"(max_retries = {self.max_retries}); raise time_min or max_retries in the "
                                   "SLURM settings, then rerun bench sweep")
        return DelayedSubmission(UnitTask(self.max_retries, self.attempt + 1), unit)


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

def job_key(unit: Unit) -> str:
    """How ``jobs.json`` names a unit: the absolute path of its record and a digest of its settings (a job
    submitted with other settings, e.g. another ``--set``, is not this unit's)."""
    settings = json.dumps(dataclasses.asdict(unit.settings), sort_keys=True, default=str)
    return f"{Path(unit.record).absolute()}#{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


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


# -- submit, attach, follow -------------------------------------------------------------------------------------

def attach(units: Sequence[Unit], folder: Path, key: Callable[[Any], str] | None = None) -> dict[Unit, Any]:
    """The units whose job from an earlier sweep is still queued or running, with that job (``key``: how
    ``jobs.json`` names a unit, default :func:`job_key`)."""
    key = key or job_key
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


def submit(plan: Plan, units: Sequence[Unit], config: SlurmConfig, folder: Path,
           running: dict[Unit, Any] | None = None) -> dict[Unit, Any]:
    """Submit ``units`` (in plan order) as one array, and those that wait for one of them or for a unit of
    ``running`` (jobs of an earlier sweep) as a second array that starts after those jobs ended."""
    executor = make_executor(config, folder)
    running = running or {}
    members = set(units)
    waits = {u: plan.waits[u] for u in units if plan.waits.get(u) in members or plan.waits.get(u) in running}
    first = [u for u in units if u not in waits]
    later = [u for u in units if u in waits]
    jobs: dict[Unit, Any] = {}
    task = UnitTask(config.max_retries)
    if first:
        jobs.update(zip(first, executor.map_array(task, first)))
    if later:
        before = {**running, **jobs}
        array_ids = sorted({before[waits[u]].job_id.split("_")[0] for u in later}, key=int)
        executor.update_parameters(dependency="afterany:" + ":".join(array_ids))
        jobs.update(zip(later, executor.map_array(task, later)))
    write_jobs(folder, {job_key(u): job.job_id for u, job in jobs.items()})
    return jobs


def failure_reason(text: str) -> str:
    """The line of a submitit error that says why: the job's exception, or that it left no output."""
    lines = [line for line in text.splitlines() if line.strip()]
    raised = [line.strip() for line in lines if _EXCEPTION_LINE.match(line)]
    if raised:
        return raised[-1]
    return " ".join(line.strip() for line in lines[:2]) or "no error message"


def _result(unit: Unit, job: Any) -> UnitResult:
    """The unit's result from its finished job, or a failure quoting the job's error."""
    try:
        result = job.result()
    except (FailedJobError, UncompletedJobError) as exc:
        return UnitResult(unit, "failed", error=f"SLURM job {job.job_id}: {failure_reason(str(exc))}",
                          log=str(job.paths.stderr))
    if not isinstance(result, UnitResult):
        return UnitResult(unit, "failed", error=f"SLURM job {job.job_id} returned {type(result).__name__}, "
                          "not a unit result", log=str(job.paths.stdout))
    return replace(result, log=str(job.paths.stdout)) if result.status == "failed" else result


def follow(jobs: dict[Unit, Any], progress: SweepProgress, poll_s: float) -> list[UnitResult]:
    """Look at the jobs every ``poll_s`` seconds until each has ended; one result per unit, in finishing order."""
    watcher = submitit.SlurmJob.watcher
    left, results = dict(jobs), []
    for unit in left:
        progress.mark_queued(unit)
    while left:
        watcher.update()
        for unit, job in list(left.items()):
            if job.done():
                result = _result(unit, job)
                del left[unit]
                results.append(result)
                progress.mark_finished(result)
            elif watcher.get_state(job.job_id, mode="cache") in RUNNING_STATES:
                progress.mark_running(unit)
        if left:
            time.sleep(poll_s)
    return results


def run_slurm(plan: Plan, progress: SweepProgress, config: SlurmConfig, logs: Path,
              wait: bool = True) -> tuple[list[UnitResult], dict[Unit, Any]]:
    """Submit the plan's units that no earlier job is running, follow all of them (``wait``), and return
    the results and the jobs (unit -> submitit job)."""
    submitit.SlurmJob.watcher.clear()
    folder = folder_of(config, logs)
    attached = attach(plan.todo, folder)
    fresh = [u for u in plan.todo if u not in attached]
    jobs = {**attached, **(submit(plan, fresh, config, folder, attached) if fresh else {})}
    if attached:
        progress.console.print(f"following {len(attached)} unit(s) already queued or running on SLURM", highlight=False)
    arrays = sorted({job.job_id.split("_")[0] for u, job in jobs.items() if u in set(fresh)}, key=int)
    if arrays:
        progress.console.print(f"submitted {len(fresh)} unit(s) as SLURM job array(s) {', '.join(arrays)}; "
                               f"scripts and logs in {folder}", highlight=False)
    if not wait:
        return [], jobs
    try:
        return follow(jobs, progress, config.poll_s), jobs
    except KeyboardInterrupt:
        progress.console.print("stopped following; the SLURM jobs go on. Rerun the same bench sweep command to "
                               "follow them again", highlight=False)
        raise


__all__ = ["ACTIVE_STATES", "RetriesExhausted", "UnitTask", "attach", "failure_reason", "folder_of", "follow", "job_key",
           "make_executor", "read_jobs", "run_slurm", "submit", "write_jobs"]
