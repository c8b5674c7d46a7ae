"""``bench data prepare jump --plan-only``: what a run would prepare, per source, without fetching an image.

The plan resolves the metadata, selects the plates, reads every selected plate's
load-data table (CSV or parquet: one row per site, no pixels), applies the reference
filter and ``--max-plates``, and reports per source the plates, batches, sites and the
expected bytes of the plates still to do. The expected download is ``sites x 5 x TIFF
size``, the TIFF size of a source being the mean size of the channel objects of its
first 3 sites, asked of the root without reading them (``stat`` / S3 HEAD), or the
typical size of :data:`~benchmark.datasets.jump.estimate.TYPICAL_TIFF_BYTES` (16-bit
Phenix ~1080², ImageXpress 1024²) where the root does not answer; it writes nothing in
the output folder (metadata that is not there yet is downloaded to a temporary folder).
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
from rich.console import Console

from ...errors import DataError
from .estimate import SAMPLE_SITES_PER_SOURCE, Estimate, estimate_by_source, human_bytes
from .fetch import open_root
from .manifest import Manifest
from .metadata import PLATE_FILE, WELL_FILE, load_metadata, resolve_metadata, select_plates
from .options import PrepareOptions
from .selection import Selection, check_selection, select_sites

HOW_TIFF_SIZE = (f"TIFF size per source: 'sampled' = mean size of the 5 channel objects of its first "
                 f"{SAMPLE_SITES_PER_SOURCE} sites, asked of the root without reading an image (stat / S3 HEAD); "
                 "'typical' = estimate.TYPICAL_TIFF_BYTES (16-bit Phenix ~1080², ImageXpress 1024²)")


@dataclass(frozen=True)
class SourcePlan:
    """One source of the plan: plates selected by the metadata, planned, done, and what is left to do."""

    source: str
    plates: int          # selected by the metadata (COMPOUND, minus the dropped batches)
    batches: int         # batches of those plates
    with_load_data: int  # of those, plates with a load-data table
    planned: int         # plates with sites after the filter (and --max-plates)
    sites: int           # poscon + DMSO sites of the planned plates
    poscon_sites: int
    dmso_sites: int
    done: int            # planned plates already prepared in the output folder
    todo: Estimate       # the planned plates still to do: sites, bytes to download and to write

    def to_json(self) -> dict:
        return asdict(self) | {"todo": asdict(self.todo)}


@dataclass(frozen=True)
class JumpPlan:
    """What ``bench data prepare jump`` would do with the same options."""

    root: str
    out: str
    sources: tuple[SourcePlan, ...]
    missing_load_data: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # what would stop the run (nothing left to prepare)

    def to_json(self) -> dict:
        return {"root": self.root, "out": self.out, "how_tiff_size": HOW_TIFF_SIZE,
                "sources": {s.source: s.to_json() for s in self.sources},
                "total": {k: sum(getattr(s, k) for s in self.sources) for k in _COUNTS}
                | {"download_bytes": sum(s.todo.download_bytes for s in self.sources),
                   "disk_bytes": sum(s.todo.disk_bytes for s in self.sources)},
                "missing_load_data": list(self.missing_load_data), "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        """The plan as a table, one row per source and a total, and how the TIFF size was found."""
        head = ("source", "plates", "batches", "load data", "planned", "sites", "poscon", "DMSO", "done",
                "to download", "to write", "TIFF size")
        rows = [_row(s.source, s, s.todo) for s in self.sources]
        total = self.to_json()["total"]
        rows.append(("total", *(f"{total[k]:,}" for k in _COUNTS), human_bytes(total["download_bytes"]),
                     human_bytes(total["disk_bytes"]), ""))
        widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
        fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
        out = [f"plan: load data read from {self.root}; no image fetched, nothing written to {self.out}",
               fmt.format(*head), *(fmt.format(*r) for r in rows), HOW_TIFF_SIZE]
        if self.missing_load_data:
            shown = ", ".join(self.missing_load_data[:5]) + (", ..." if len(self.missing_load_data) > 5 else "")
            out.append(f"{len(self.missing_load_data)} selected plate(s) have no load data and are left out: {shown}")
        return out + [f"warning: {w}" for w in self.warnings]


_COUNTS = ("plates", "batches", "with_load_data", "planned", "sites", "poscon_sites", "dmso_sites", "done")


def _row(name: str, s: SourcePlan, todo: Estimate) -> tuple[str, ...]:
    size = f"{human_bytes(todo.tiff_bytes)} ({'sampled' if todo.sampled else 'typical'})" if todo.n_sites else ""
    return (name, *(f"{getattr(s, k):,}" for k in _COUNTS), human_bytes(todo.download_bytes),
            human_bytes(todo.disk_bytes), size)


def _metadata_folder(options: PrepareOptions, tmp: Path) -> Path:
    """``--metadata``, else ``<out>/metadata`` when it holds the tables, else a download into ``tmp``."""
    cached = options.out_dir / "metadata"
    if options.metadata is None and (cached / PLATE_FILE).is_file() and (cached / WELL_FILE).is_file():
        return cached
    return resolve_metadata(options.metadata, tmp)


def _source_plan(source: str, selection: Selection, done: set[str], todo: Estimate | None) -> SourcePlan:
    plates = selection.plates.filter(pl.col("source") == source)
    sites = selection.sites.filter(pl.col("source") == source)
    ids = set(plates["plate_id"].to_list())
    planned = [p for p in selection.ordered if p in ids]
    return SourcePlan(source, len(plates), plates["batch"].n_unique(),
                      len(ids - set(selection.missing_load_data)), len(planned), len(sites),
                      int((~sites["is_control"]).sum()), int(sites["is_control"].sum()),
                      sum(p in done for p in planned), todo or Estimate(0, 0, 0, 0, True))


def plan_jump(options: PrepareOptions, console: Console | None = None) -> JumpPlan:
    """The plan of a run with ``options``: reads metadata and load data, fetches no image, writes nothing."""
    console = console or Console(stderr=True)
    root = open_root(options.root, max_connections=options.workers)
    with tempfile.TemporaryDirectory(prefix="jump-metadata-") as tmp:
        meta_dir = _metadata_folder(options, Path(tmp))
        meta = load_metadata(meta_dir)
        plates = select_plates(meta, options.sources, options.dropped_batches)
        with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="jump-plan") as pool:
            selection = select_sites(options, root, plates, meta_dir, meta, pool, console, write_cache=False)
    try:
        check_selection(selection, root, options.min_sites)
        warnings: tuple[str, ...] = ()
    except DataError as exc:
        warnings = (str(exc),)
    manifest = Manifest.open(options.out_dir, options.settings())
    done = {p for p in selection.ordered if manifest.is_complete(p)}
    todo = estimate_by_source(selection.sites.filter(~pl.col("plate_id").is_in(list(done))), root, options.crop)
    sources = tuple(_source_plan(s, selection, done, todo.get(s)) for s in options.sources)
    return JumpPlan(root.description, str(options.out_dir), sources, tuple(selection.missing_load_data), warnings)


__all__ = ["HOW_TIFF_SIZE", "JumpPlan", "SourcePlan", "plan_jump"]
