"""``bench data prepare jump --executor slurm``: one SLURM array task per plate, through submitit.

The sweep's SLURM machinery is reused as it is: its settings (:class:`SlurmConfig`), its
executor (:func:`~benchmark.slurm.jobs.make_executor`), its ``jobs.json`` (which job
prepares which plate, so a rerun follows the plates still queued or running instead of
submitting them twice) and its reading of a failed job's error. Each task runs
:class:`PlateTask`, a submitit ``Checkpointable``: a preempted or timed-out plate is
requeued (it starts again; its files and entry are only ever written whole) up to
``max_retries`` times. Every task needs the output folder on a file system the nodes share.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit
from rich.console import Console
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable, DelayedSubmission

from ...slurm.jobs import RetriesExhausted, attach, failure_reason, folder_of, make_executor, write_jobs
from ...slurm.config import SlurmConfig
from .units import FAILED, PlateOutcome, PlateUnit, run_plate_unit

COMMAND = "bench data prepare jump"


class PlateTask(Checkpointable):
    """What one array task runs: one plate through :func:`run_plate_unit`; requeued when preempted."""

    def __init__(self, max_retries: int, attempt: int = 0):
        self.max_retries, self.attempt = max_retries, attempt

    def __call__(self, unit: PlateUnit) -> PlateOutcome:
        print(f"{COMMAND}: plate {unit.plate_id} (attempt {self.attempt + 1} of at most {self.max_retries + 1}), "
              f"{len(unit.sites)} sites, entry {unit.entry}", flush=True)
        return run_plate_unit(unit)

    def checkpoint(self, unit: PlateUnit) -> DelayedSubmission:  # type: ignore[override]
        if self.attempt >= self.max_retries:
            raise RetriesExhausted(f"plate {unit.plate_id} was preempted or ran out of time {self.attempt + 1} times "
                                   f"(max_retries = {self.max_retries}); raise time_min or max_retries in the SLURM "
                                   f"settings, then rerun {COMMAND}")
        return DelayedSubmission(PlateTask(self.max_retries, self.attempt + 1), unit)


def job_key(unit: PlateUnit) -> str:
    """How ``jobs.json`` names a plate: its entry file and a digest of the settings that shape its data."""
    settings = json.dumps(unit.options.settings(), sort_keys=True)
    return f"{unit.entry}#{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def submit(units: Sequence[PlateUnit], config: SlurmConfig, folder: Path) -> dict[PlateUnit, Any]:
    """Submit ``units`` as one job array (one task per plate) and remember their jobs in ``jobs.json``."""
    executor = make_executor(config, folder)
    jobs = dict(zip(units, executor.map_array(PlateTask(config.max_retries), list(units))))
    write_jobs(folder, {job_key(u): job.job_id for u, job in jobs.items()})
    return jobs


def _outcome(unit: PlateUnit, job: Any) -> PlateOutcome:
    """The plate's outcome from its finished job, or a failure quoting the job's error."""
    try:
        outcome = job.result()
    except (FailedJobError, UncompletedJobError) as exc:
        return PlateOutcome(unit.plate_id, FAILED, error=f"SLURM job {job.job_id}: {failure_reason(str(exc))}",
                            log=str(job.paths.stderr))
    if not isinstance(outcome, PlateOutcome):
        return PlateOutcome(unit.plate_id, FAILED, error=f"SLURM job {job.job_id} returned {type(outcome).__name__}, "
                            "not a plate outcome", log=str(job.paths.stdout))
    return replace(outcome, log=str(job.paths.stdout)) if outcome.status == FAILED else outcome


def follow(jobs: dict[PlateUnit, Any], poll_s: float, on_outcome: Callable[[PlateOutcome], None]) -> None:
    """Look at the jobs every ``poll_s`` seconds (one ``sacct`` call) until each has ended."""
    watcher = submitit.SlurmJob.watcher
    left = dict(jobs)
    while left:
        watcher.update()
        for unit, job in list(left.items()):
            if job.done():
                del left[unit]
                on_outcome(_outcome(unit, job))
        if left:
            time.sleep(poll_s)


def run_slurm(units: Sequence[PlateUnit], config: SlurmConfig | None, out: Path, wait: bool,
              on_outcome: Callable[[PlateOutcome], None], console: Console) -> None:
    """Submit the plates no earlier job is preparing, then follow every one of them (``wait``)."""
    config = config or SlurmConfig()
    submitit.SlurmJob.watcher.clear()
    folder = folder_of(config, out)
    attached = attach(units, folder, key=job_key)
    fresh = [u for u in units if u not in attached]
    jobs = {**attached, **(submit(fresh, config, folder) if fresh else {})}
    if attached:
        console.print(f"following {len(attached)} plate(s) already queued or running on SLURM", highlight=False)
    if fresh:
        array = jobs[fresh[0]].job_id.split("_")[0]
        console.print(f"submitted {len(fresh)} plate(s) as SLURM job array {array} (one task per plate); scripts "
                      f"and logs in {folder}", highlight=False)
    if not wait:
        return
    try:
        follow(jobs, config.poll_s, on_outcome)
    except KeyboardInterrupt:
        console.print(f"stopped following; the SLURM jobs go on. Rerun the same {COMMAND} command to follow them "
                      "again", highlight=False)
        raise


__all__ = ["PlateTask", "follow", "job_key", "run_slurm", "submit"]
