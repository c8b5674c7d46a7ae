"""``prepare_jump``: JUMP-CP (cpg0016) -> platebench index + packed store, resumably.

Steps: metadata tables -> COMPOUND plates of the chosen sources (minus the
reference's dropped batches) -> every plate's load data -> poscon and DMSO sites
-> the reference (compound, well) filter -> size estimate and confirmation ->
per plate: fetch, preprocess, write shard + rows, record in the manifest ->
index + ``dataset.json`` over every finished plate.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeRemainingColumn)
from rich.text import Text

from ...constants import CHANNELS
from ...errors import BenchError, DataError
from ...paths import cache_dir, ensure_writable
from ..dataset import DatasetMeta, write_dataset
from .estimate import Estimate, estimate, human_bytes
from .fetch import DEFAULT_ROOT, LocalRoot, Root, TransientError, open_root
from .loaddata import read_load_data
from .manifest import Manifest, PlateRecord, SkippedSite, disk_full_guard, remove_partial_files, write_plate
from .metadata import (REFERENCE_DROPPED_BATCHES, load_metadata, microscope_names, resolve_metadata,
                       select_plates)
from .plan import label_sites, order_plates, reference_filter
from .plate import prepare_plate
from .preprocess import CLIP_QUANTILE, PREPROCESSING_VERSION

DATASET_NAME = "jump"
DATASET_VERSION = "cpg0016"
CONFIRM_ABOVE_BYTES = 20 * 10**9
"""Ask before downloading more than this (unless ``--yes``)."""
SITES_FILE, SITES_KEY_FILE = "sites.parquet", "sites.json"


def default_out() -> Path:
    """Where ``bench data prepare jump`` writes and the ``jump`` loader reads by default."""
    return cache_dir() / "jump"


@dataclass(frozen=True)
class PrepareOptions:
    """Everything a preparation run depends on (see ``bench data prepare jump --help``)."""

    root: str = DEFAULT_ROOT
    sources: tuple[str, ...] = ("source_3", "source_8")
    drop_reference_batches: bool = True
    min_sites: int = 36
    out: Path | None = None
    workers: int = 16
    max_plates: int | None = None
    metadata: Path | None = None
    crop: int = 512
    attempts: int = 3
    backoff_s: float = 1.0

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser() if self.out is not None else default_out()

    @property
    def dropped_batches(self) -> dict[str, tuple[str, ...]]:
        return dict(REFERENCE_DROPPED_BATCHES) if self.drop_reference_batches else {}

    def settings(self) -> dict:
        """What determines the prepared data (not where it is read from, nor how fast)."""
        return {"sources": list(self.sources),
                "dropped_batches": {k: list(v) for k, v in self.dropped_batches.items()},
                "min_sites": self.min_sites, "crop": self.crop, "clip_quantile": CLIP_QUANTILE,
                "channels": list(CHANNELS), "preprocessing": PREPROCESSING_VERSION}


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


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} sites/s")


class _BytesColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(human_bytes(task.fields.get("bytes", 0)))


def _retry(fn: Callable, attempts: int, backoff_s: float):
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TransientError:
            if attempt == attempts:
                raise
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _sites_key(options: PrepareOptions, plates: pl.DataFrame, metadata: Path) -> str:
    h = hashlib.sha256(json.dumps(options.settings(), sort_keys=True).encode())
    h.update("\n".join(plates["plate_id"].to_list()).encode())
    for name in ("plate.csv.gz", "well.csv.gz"):
        h.update((metadata / name).read_bytes())
    return h.hexdigest()


def _collect_sites(options: PrepareOptions, root: Root, plates: pl.DataFrame, meta_dir: Path, wells: pl.DataFrame,
                   pool: ThreadPoolExecutor, console: Console) -> tuple[pl.DataFrame, list[str]]:
    """Poscon and DMSO sites of every selected plate (cached in ``<out>/sites.parquet``)."""
    out = options.out_dir
    key = _sites_key(options, plates, meta_dir)
    cache, key_file = out / SITES_FILE, out / SITES_KEY_FILE
    if cache.is_file() and key_file.is_file():
        stored = json.loads(key_file.read_text())
        if stored.get("key") == key:
            return pl.read_parquet(cache), stored["missing"]
    console.print(f"reading the load data of {len(plates)} plates from {root.description}")
    rows = plates.to_dicts()
    futures = [pool.submit(_retry, lambda r=r: read_load_data(root, r["source"], r["batch"], r["plate"]),
                           options.attempts, options.backoff_s) for r in rows]
    parts, missing = [], []
    for row, fut in zip(rows, futures):
        load_data = fut.result()
        if load_data is None:
            missing.append(row["plate_id"])
            continue
        parts.append(label_sites(row, load_data, wells))
    if not parts:
        raise DataError(f"no load data found under {root.description} for any of the {len(plates)} selected plates "
                        f"(looked in cpg0016-jump/<source>/workspace/load_data_csv/<batch>/<plate>/)")
    sites = pl.concat(parts)
    with disk_full_guard(out):
        sites.write_parquet(cache)
        key_file.write_text(json.dumps({"key": key, "missing": missing}))
    return sites, missing


def _confirm_default(est: Estimate) -> bool:
    return True


def prepare_jump(options: PrepareOptions, confirm: Callable[[Estimate], bool] = _confirm_default,
                 console: Console | None = None) -> PrepareReport:
    """Prepare JUMP-CP into ``options.out_dir``; finished plates of earlier runs are kept.

    ``confirm(estimate)`` is asked when the expected download exceeds
    :data:`CONFIRM_ABOVE_BYTES`; returning False stops before anything is fetched.
    """
    console = console or Console()
    out = ensure_writable(options.out_dir, "--out folder")
    if options.workers < 1:
        raise BenchError(f"--workers must be >= 1, got {options.workers}")
    if options.crop < 1:
        raise BenchError(f"--crop must be >= 1, got {options.crop}")
    remove_partial_files(out)
    root = open_root(options.root, max_connections=options.workers)
    meta_dir = resolve_metadata(options.metadata, out / "metadata")
    meta = load_metadata(meta_dir)
    plates = select_plates(meta, options.sources, options.dropped_batches)
    manifest = Manifest.open(out, options.settings())
    report = PrepareReport(out=out, meta=None)
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="jump-fetch")
    try:
        all_sites, report.missing_load_data = _collect_sites(options, root, plates, meta_dir, meta.wells, pool, console)
        for plate_id in report.missing_load_data:
            console.print(f"[yellow]warning:[/yellow] no load data for plate {plate_id}; it is left out")
        sites = reference_filter(all_sites, options.min_sites)
        with_sites = plates.filter(pl.col("plate_id").is_in(sites["plate_id"].unique().to_list()))
        if with_sites.is_empty():
            raise DataError(f"no poscon or DMSO site is left after the filter --min-sites {options.min_sites} "
                            f"({len(all_sites)} sites before it); lower --min-sites")
        ordered = order_plates(with_sites, options.max_plates)["plate_id"].to_list()
        for plate_id in ordered:
            if plate_id in manifest.plates and not manifest.is_complete(plate_id):
                console.print(f"[yellow]plate {plate_id}: files do not match the manifest; it is redone")
                manifest.forget(plate_id)
        todo = [p for p in ordered if p not in manifest.plates]
        report.resumed = [p for p in ordered if p in manifest.plates]
        todo_sites = sites.filter(pl.col("plate_id").is_in(todo))
        report.estimate = est = estimate(todo_sites, root, options.crop)
        remote = not isinstance(root, LocalRoot)
        console.print(f"{len(report.resumed)} of {len(ordered)} plates already prepared in {out}")
        if todo:
            console.print(f"to do: {est.describe(remote)}")
            free = shutil.disk_usage(out).free
            if free < est.disk_bytes:
                console.print(f"[yellow]warning:[/yellow] only {human_bytes(free)} free on the device of {out}")
            if est.download_bytes > CONFIRM_ABOVE_BYTES and not confirm(est):
                raise BenchError("not confirmed; nothing was downloaded (pass --yes to skip the question)")
            _run_plates(options, root, todo, todo_sites, manifest, pool, console, report)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    report.meta = _write_index(out, ordered, manifest, options, meta, report)
    _print_summary(console, report, manifest, ordered)
    return report


def _run_plates(options: PrepareOptions, root: Root, todo: Sequence[str], sites: pl.DataFrame, manifest: Manifest,
                pool: ThreadPoolExecutor, console: Console, report: PrepareReport) -> None:
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

            try:
                result = prepare_plate(by_plate[plate_id], root, pool, options.crop, options.attempts,
                                       options.backoff_s, on_site, on_skip)
            except TransientError as exc:
                raise BenchError(f"network error after {options.attempts} attempts: {exc}; check the connection "
                                 "and rerun the same command to resume (finished plates are kept)") from None
            record = write_plate(options.out_dir, plate_id, result.images, result.rows, result.skipped)
            manifest.record(record)
            report.prepared.append(plate_id)
            progress.console.print(f"{plate_id}: {len(result.rows)} sites, {len(result.skipped)} skipped, "
                                   f"{human_bytes(result.n_bytes)} read")


def _unique_batches(index: pl.DataFrame) -> pl.DataFrame:
    """Prefix batch names shared by several sources with the source, so batches are unique."""
    shared = (index.select("source", "batch").unique().group_by("batch").agg(n=pl.len())
              .filter(pl.col("n") > 1)["batch"].to_list())
    if not shared:
        return index
    return index.with_columns(pl.when(pl.col("batch").is_in(shared))
                              .then(pl.concat_str("source", "batch", separator="_"))
                              .otherwise(pl.col("batch")).alias("batch"))


def _write_index(out: Path, ordered: Sequence[str], manifest: Manifest, options: PrepareOptions, meta,
                 report: PrepareReport) -> DatasetMeta | None:
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
    console.print(f"prepared {len(report.prepared)} plate(s) in this run, {len(report.resumed)} kept from earlier runs")
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
