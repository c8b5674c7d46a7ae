"""One unit of a JUMP-CP preparation = one plate: fetch its sites, preprocess, write its files and its entry.

A :class:`PlateUnit` carries everything a plate needs (its sites after the reference
filter and the run's options), so it runs the same wherever it lands: in this process,
in a local worker process, or in a SLURM array task on another machine sharing the output
folder. :func:`run_plate_unit` writes the plate's shard and rows table (each atomically),
then its own manifest entry file (:func:`~benchmark.datasets.jump.manifest.write_entry`),
and never the shared ``prepare-manifest.json``: the coordinating command folds the entries.
A unit killed before its entry is written leaves no record; its plate is redone next run.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl
from rich.console import Console

from ...errors import BenchError
from .estimate import human_bytes
from .fetch import Root, TransientError, open_root
from .manifest import PlateRecord, SkippedSite, entry_path, remove_plate_partials, write_entry, write_plate
from .options import PrepareOptions
from .plate import prepare_plate

OK, FAILED = "ok", "failed"


@dataclass(frozen=True)
class PlateUnit:
    """One plate to prepare: its id, its sites (one row per site, after the filter) and the run's options."""

    plate_id: str
    options: PrepareOptions = field(compare=False, repr=False)
    sites: pl.DataFrame = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        return self.plate_id

    @property
    def entry(self) -> Path:
        """The entry file the unit writes when its plate is done."""
        return entry_path(self.options.out_dir.absolute(), self.plate_id)


@dataclass(frozen=True)
class PlateOutcome:
    """What a unit did: ``ok`` with the plate's record, or ``failed`` with the error (and a log to read)."""

    plate_id: str
    status: str
    record: PlateRecord | None = None
    n_bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None

    def line(self) -> str:
        """``ok      <plate>: 540 sites, 0 skipped, 6.5 GB read (312 s)`` or ``FAILED  <plate>: <error>``."""
        if self.status == OK and self.record is not None:
            return (f"ok      {self.plate_id}: {self.record.n_sites} sites, {len(self.record.skipped)} skipped, "
                    f"{human_bytes(self.n_bytes)} read ({self.seconds:.0f} s)")
        where = f" (log: {self.log})" if self.log else ""
        return f"FAILED  {self.plate_id}: {self.error}{where}"


class UnitRunner(Protocol):
    """Runs plate units somewhere and hands back their outcomes (``executors.ExecutorOptions`` is one).

    ``executor`` names where (``local``, ``debug``, ``slurm``); ``slurm`` units of an earlier run may still
    be writing into the output folder, so a run on it leaves other plates' temporary files alone.
    """

    executor: str

    def run(self, units: Sequence[PlateUnit], out: Path, console: Console) -> list[PlateOutcome]:
        """Run ``units`` (printing one line per finished plate); the outcomes of those that ended."""
        ...


def network_error(exc: TransientError, attempts: int) -> BenchError:
    """The error a plate ends with when the network fails after every attempt."""
    return BenchError(f"network error after {attempts} attempts: {exc}; check the connection and rerun the same "
                      "command to resume (finished plates are kept)")


def prepare_one(plate_id: str, sites: pl.DataFrame, options: PrepareOptions, root: Root, pool: Executor,
                on_site: Callable[[int], None] | None = None,
                on_skip: Callable[[SkippedSite], None] | None = None) -> tuple[PlateRecord, int]:
    """Fetch, preprocess and write one plate's shard and rows (no manifest entry); its record and bytes read."""
    out = options.out_dir
    remove_plate_partials(out, plate_id)
    try:
        result = prepare_plate(sites, root, pool, options.crop, options.attempts, options.backoff_s, on_site, on_skip)
    except TransientError as exc:
        raise network_error(exc, options.attempts) from None
    return write_plate(out, plate_id, result.images, result.rows, result.skipped), result.n_bytes


def run_plate_unit(unit: PlateUnit) -> PlateOutcome:
    """Prepare ``unit``'s plate and write its entry file; any failure is a ``failed`` outcome, never raised.

    The traceback of an unexpected failure goes to stderr (the worker's or the SLURM task's log).
    """
    start = time.perf_counter()
    options = unit.options
    try:
        root = open_root(options.root, max_connections=options.workers)
        with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="jump-fetch") as pool:
            record, n_bytes = prepare_one(unit.plate_id, unit.sites, options, root, pool)
        write_entry(options.out_dir, options.settings(), record)
    except BenchError as exc:
        return PlateOutcome(unit.plate_id, FAILED, seconds=time.perf_counter() - start, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash of one plate is its outcome, reported by the coordinator
        traceback.print_exc(file=sys.stderr)
        return PlateOutcome(unit.plate_id, FAILED, seconds=time.perf_counter() - start,
                            error=f"{type(exc).__name__}: {exc}")
    return PlateOutcome(unit.plate_id, OK, record, n_bytes, time.perf_counter() - start)


__all__ = ["FAILED", "OK", "PlateOutcome", "PlateUnit", "UnitRunner", "network_error", "prepare_one",
           "run_plate_unit"]
