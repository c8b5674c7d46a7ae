"""``prepare_jump``: JUMP-CP (cpg0016) -> platebench index + packed store, resumably.

Steps: metadata tables -> COMPOUND plates of the chosen sources (minus the
reference's dropped batches) -> every plate's load data -> poscon and DMSO sites
-> the reference (compound, well) filter -> size estimate and confirmation ->
per plate: fetch, preprocess, write shard + rows, record its manifest entry
(here, one plate after another, or one unit per plate on an executor of
``bench sweep``: a :class:`~.units.UnitRunner` such as :class:`.executors.ExecutorOptions`)
-> fold of the entries -> index +
``dataset.json`` over the planned plates, written only once every one is done.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeRemainingColumn)
from rich.text import Text

from ...errors import BenchError
from ...paths import ensure_writable
from ..dataset import DatasetMeta, write_dataset
from .estimate import Estimate, estimate, human_bytes
from .fetch import LocalRoot, Root, open_root
from .manifest import Manifest, PlateRecord, SkippedSite, disk_full_guard, remove_partial_files
from .metadata import load_metadata, microscope_names, resolve_metadata, select_plates
from .options import PrepareOptions, default_out
from .selection import SITES_FILE, SITES_KEY_FILE, check_selection, select_sites, warn_missing
from .units import OK, PlateUnit, UnitRunner, prepare_one

DATASET_NAME = "jump"
DATASET_VERSION = "cpg0016"
CONFIRM_ABOVE_BYTES = 20 * 10**9
"""Ask before downloading more than this (unless ``--yes``)."""


@dataclass
class PrepareReport:
    """What a run did."""

    out: Path
    meta: DatasetMeta | None
    prepared: list[str] = field(default_factory=list)   # plates processed in this run
    resumed: list[str] = field(default_factory=list)    # plates already finished before
    skipped_sites: dict[str, int] = field(default_factory=dict)
    missing_load_data: list[str] = field(default_factory=list)
    estimate: Estimate | None = None
    failed: dict[str, str] = field(default_factory=dict)  # plate -> error, of the units that failed
    pending: list[str] = field(default_factory=list)      # plates queued or running on SLURM (--no-wait)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} sites/s")


class _BytesColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(human_bytes(task.fields.get("bytes", 0)))


def _check_options(options: PrepareOptions) -> None:
    if options.workers < 1:
        raise BenchError(f"--workers must be >= 1, got {options.workers}")
    if options.crop < 1:
        raise BenchError(f"--crop must be >= 1, got {options.crop}")


def _confirm_default(est: Estimate) -> bool:
    return True


def prepare_jump(options: PrepareOptions, confirm: Callable[[Estimate], bool] = _confirm_default,
                 console: Console | None = None, runner: UnitRunner | None = None) -> PrepareReport:
    """Prepare JUMP-CP into ``options.out_dir``; finished plates of earlier runs are kept.

    ``confirm(estimate)`` is asked when the expected download exceeds
    :data:`CONFIRM_ABOVE_BYTES`; returning False stops before anything is fetched.
    ``runner`` prepares the plates as units (one per plate) on an executor; without it
    they are prepared here, one after another. A plate that fails on an executor is a
    :class:`BenchError` naming it, raised after every other plate has ended; the index is
    then not written.
    """
    console = console or Console()
    _check_options(options)
    out = ensure_writable(options.out_dir, "--out folder")
    if runner is None or runner.executor != "slurm":
        remove_partial_files(out)  # (SLURM tasks of an earlier run may still be writing: each cleans its own plate)
    root = open_root(options.root, max_connections=options.workers)
    meta_dir = resolve_metadata(options.metadata, out / "metadata")
    meta = load_metadata(meta_dir)
    plates = select_plates(meta, options.sources, options.dropped_batches)
    manifest = Manifest.open(out, options.settings())
    manifest.fold()
    report = PrepareReport(out=out, meta=None)
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="jump-fetch")
    try:
        selection = select_sites(options, root, plates, meta_dir, meta, pool, console)
        report.missing_load_data = selection.missing_load_data
        warn_missing(console, selection.missing_load_data)
        check_selection(selection, root, options.min_sites)
        ordered = selection.ordered
        for plate_id in ordered:
            if plate_id in manifest.plates and not manifest.is_complete(plate_id):
                console.print(f"[yellow]plate {plate_id}: files do not match the manifest; it is redone")
                manifest.forget(plate_id)
        todo = [p for p in ordered if p not in manifest.plates]
        report.resumed = [p for p in ordered if p in manifest.plates]
        todo_sites = selection.sites.filter(pl.col("plate_id").is_in(todo))
        report.estimate = est = estimate(todo_sites, root, options.crop)
        console.print(f"{len(report.resumed)} of {len(ordered)} plates already prepared in {out}")
        if todo:
            _announce(console, est, out, remote=not isinstance(root, LocalRoot))
            if est.download_bytes > CONFIRM_ABOVE_BYTES and not confirm(est):
                raise BenchError("not confirmed; nothing was downloaded (pass --yes to skip the question)")
            if runner is None:
                _run_in_process(options, root, todo, todo_sites, manifest, pool, console, report)
            else:
                _run_units(options, runner, todo, todo_sites, manifest, console, report)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if all(p in manifest.plates for p in ordered):
        report.meta = _write_index(out, ordered, manifest, options, meta)
    _print_summary(console, report, manifest, ordered)
    _raise_failures(report, ordered)
    return report


def _announce(console: Console, est: Estimate, out: Path, remote: bool) -> None:
    console.print(f"to do: {est.describe(remote)}")
    free = shutil.disk_usage(out).free
    if free < est.disk_bytes:
        console.print(f"[yellow]warning:[/yellow] only {human_bytes(free)} free on the device of {out}")


def _run_in_process(options: PrepareOptions, root: Root, todo: Sequence[str], sites: pl.DataFrame,
                    manifest: Manifest, pool: Executor, console: Console, report: PrepareReport) -> None:
    by_plate = {pid: group for (pid,), group in sites.group_by("plate_id", maintain_order=True)}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
               _BytesColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("sites", total=len(sites), bytes=0)
        n_bytes = 0

        def on_site(b: int) -> None:
            nonlocal n_bytes
            n_bytes += b
            progress.update(task, advance=1, bytes=n_bytes)

        for i, plate_id in enumerate(todo, 1):
            progress.update(task, description=f"plate {i}/{len(todo)}")

            def on_skip(s: SkippedSite, plate_id: str = plate_id) -> None:
                progress.console.print(f"[yellow]skipped[/yellow] {plate_id} {s.well} site {s.site}: {s.key}: {s.reason}")

            record, plate_bytes = prepare_one(plate_id, by_plate[plate_id], options, root, pool, on_site, on_skip)
            manifest.record(record)
            report.prepared.append(plate_id)
            progress.console.print(f"{plate_id}: {record.n_sites} sites, {len(record.skipped)} skipped, "
                                   f"{human_bytes(plate_bytes)} read")


def plate_units(options: PrepareOptions, todo: Sequence[str], sites: pl.DataFrame) -> list[PlateUnit]:
    """One unit per plate of ``todo``, in that order, with absolute paths (units may run in another folder)."""
    root = options.root if options.root.startswith("s3://") else str(Path(options.root).expanduser().absolute())
    unit_options = replace(options, root=root, out=options.out_dir.absolute(), metadata=None)
    by_plate = {pid: group for (pid,), group in sites.group_by("plate_id", maintain_order=True)}
    return [PlateUnit(plate_id, unit_options, by_plate[plate_id]) for plate_id in todo]


def _run_units(options: PrepareOptions, runner: UnitRunner, todo: Sequence[str], sites: pl.DataFrame,
               manifest: Manifest, console: Console, report: PrepareReport) -> None:
    outcomes = runner.run(plate_units(options, todo, sites), options.out_dir, console)
    manifest.fold(o.record for o in outcomes if o.status == OK and o.record is not None)
    ended = {o.plate_id for o in outcomes}
    report.prepared = [p for p in todo if p in ended and p in manifest.plates]
    report.failed = {o.plate_id: o.error or "failed" for o in outcomes if o.status != OK}
    report.pending = [p for p in todo if p not in ended and p not in manifest.plates]


def _raise_failures(report: PrepareReport, ordered: Sequence[str]) -> None:
    """Failed plates are an error naming them; plates still running on SLURM (``--no-wait``) are not."""
    if not report.failed:
        return
    first, error = next(iter(report.failed.items()))
    kept = len(ordered) - len(report.failed) - len(report.pending)
    raise BenchError(f"{len(report.failed)} of {len(ordered)} plate(s) failed (first: {first}: {error}); the "
                     f"dataset index was not written, as it would lack them. Rerun the same command to retry them "
                     f"(the {kept} finished plate(s) are kept)")


def _unique_batches(index: pl.DataFrame) -> pl.DataFrame:
    """Prefix batch names shared by several sources with the source, so batches are unique."""
    shared = (index.select("source", "batch").unique().group_by("batch").agg(n=pl.len())
              .filter(pl.col("n") > 1)["batch"].to_list())
    if not shared:
        return index
    return index.with_columns(pl.when(pl.col("batch").is_in(shared))
                              .then(pl.concat_str("source", "batch", separator="_"))
                              .otherwise(pl.col("batch")).alias("batch"))


def _write_index(out: Path, ordered: Sequence[str], manifest: Manifest, options: PrepareOptions,
                 meta) -> DatasetMeta | None:
    parts, shards = [], []
    for plate_id in ordered:
        record = manifest.plates.get(plate_id)
        if record is None or record.shard is None:
            continue
        rows = pl.read_parquet(out / record.rows_file)
        parts.append(rows.with_columns(shard=pl.lit(len(shards), pl.Int32),
                                       offset=pl.int_range(pl.len(), dtype=pl.Int32)))
        shards.append(record.shard)
    if not parts:
        return None
    index = _unique_batches(pl.concat(parts)).drop("plate").rename({"plate_id": "plate"})
    index = index.with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64))
    settings = options.settings() | {"microscopes": microscope_names(meta, options.sources),
                                     "plates": [p for p in ordered if p in manifest.plates]}
    description = ("JUMP-CP cpg0016 (CC0): the 8 positive controls and DMSO of COMPOUND plates of "
                   f"{', '.join(options.sources)}, preprocessed as in the reference study")
    with disk_full_guard(out):
        return write_dataset(out, DATASET_NAME, DATASET_VERSION, settings, index, shards, description)


def _print_summary(console: Console, report: PrepareReport, manifest: Manifest, ordered: Sequence[str]) -> None:
    total = 0
    lines = []
    for plate_id in ordered:
        record: PlateRecord | None = manifest.plates.get(plate_id)
        if record is None:
            continue
        report.skipped_sites[plate_id] = len(record.skipped)
        total += len(record.skipped)
        if record.skipped:
            lines.append(f"  {plate_id}: {len(record.skipped)} site(s) skipped")
    console.print(f"prepared {len(report.prepared)} plate(s) in this run, {len(report.resumed)} kept from earlier runs"
                  + (f", {len(report.failed)} failed" if report.failed else "")
                  + (f", {len(report.pending)} queued or running on SLURM" if report.pending else ""))
    if lines:
        console.print(f"skipped sites per plate ({total} in all; reasons in {manifest.path}):")
        for line in lines:
            console.print(line)
    else:
        console.print("skipped sites: none")
    if report.meta is not None:
        n = sum(s.n_images for s in report.meta.shards)
        console.print(f"dataset written to {report.out}: {n:,} site images in {len(report.meta.shards)} plates, "
                      f"fingerprint {report.meta.fingerprint}")


__all__ = ["CONFIRM_ABOVE_BYTES", "PrepareOptions", "PrepareReport", "SITES_FILE",
           "SITES_KEY_FILE", "default_out", "plate_units", "prepare_jump"]
