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
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable, DelayedSubmission

from ..slurm.config import SlurmConfig
from ..slurm.jobs import (RUNNING_STATES, RetriesExhausted, attach, failure_reason, folder_of, make_executor,
                          write_jobs)
from .grid import Unit
from .plan import Plan
from .progress import SweepProgress
from .unit import UnitResult, run_unit

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


# -- jobs.json ------------------------------------------------------------------------------------------------

def job_key(unit: Unit) -> str:
    """How ``jobs.json`` names a unit: the absolute path of its record and a digest of its settings (a job
    submitted with other settings, e.g. another ``--set``, is not this unit's)."""
    settings = json.dumps(dataclasses.asdict(unit.settings), sort_keys=True, default=str)
    return f"{Path(unit.record).absolute()}#{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


# -- submit, attach, follow -------------------------------------------------------------------------------------

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
    attached = attach(plan.todo, folder, job_key)
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


__all__ = ["UnitTask", "follow", "job_key", "run_slurm", "submit"]
