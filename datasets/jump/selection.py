"""Which plates and sites a run prepares: metadata -> plates -> load data -> sites -> filter -> order.

Shared by the preparation and by ``--plan-only``; reads load-data tables, never an image.
The poscon and DMSO sites of every plate are cached in ``<out>/sites.parquet`` (keyed by
the settings, the plate list and the metadata tables) by a preparation run; the plan only
reads that cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console

from ...errors import DataError
from .fetch import Root, TransientError
from .loaddata import key_columns, read_load_data
from .manifest import disk_full_guard
from .metadata import JumpMetadata
from .options import PrepareOptions
from .plan import SITE_COLUMNS, label_sites, order_plates, reference_filter

SITES_FILE, SITES_KEY_FILE = "sites.parquet", "sites.json"
_SHOWN_MISSING = 5


@dataclass(frozen=True)
class Selection:
    """What a run would prepare.

    ``plates``: every plate the metadata selects (source, batch, plate, plate_id);
    ``sites``: the poscon and DMSO sites of the planned plates after the reference filter;
    ``ordered``: the planned plates in preparation order (after ``--max-plates``);
    ``missing_load_data``: selected plates without a load-data table (left out).
    """

    plates: pl.DataFrame
    sites: pl.DataFrame
    ordered: list[str]
    missing_load_data: list[str]
    n_sites_before_filter: int


def retry(fn: Callable, attempts: int, backoff_s: float):
    """``fn()``, retried on :class:`TransientError` with exponential backoff."""
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


def _empty_sites() -> pl.DataFrame:
    schema = {c: pl.Utf8 for c in (*SITE_COLUMNS, *key_columns())}
    return pl.DataFrame(schema=schema | {"site": pl.Int32, "label": pl.Int8, "is_control": pl.Boolean})


def read_sites(options: PrepareOptions, root: Root, plates: pl.DataFrame, wells: pl.DataFrame, pool: Executor,
               console: Console) -> tuple[pl.DataFrame, list[str]]:
    """Poscon and DMSO sites of every plate in ``plates`` (before the filter) and the plates without load data."""
    console.print(f"reading the load data of {len(plates)} plates from {root.description}", highlight=False)
    rows = plates.to_dicts()
    futures = [pool.submit(retry, lambda r=r: read_load_data(root, r["source"], r["batch"], r["plate"]),
                           options.attempts, options.backoff_s) for r in rows]
    parts, missing = [], []
    for row, fut in zip(rows, futures):
        load_data = fut.result()
        if load_data is None:
            missing.append(row["plate_id"])
        else:
            parts.append(label_sites(row, load_data, wells))
    return (pl.concat(parts) if parts else _empty_sites()), missing


def collect_sites(options: PrepareOptions, root: Root, plates: pl.DataFrame, meta_dir: Path, wells: pl.DataFrame,
                  pool: Executor, console: Console, write_cache: bool = True) -> tuple[pl.DataFrame, list[str]]:
    """:func:`read_sites` through the cache ``<out>/sites.parquet`` (written only with ``write_cache``)."""
    out = options.out_dir
    key = _sites_key(options, plates, meta_dir)
    cache, key_file = out / SITES_FILE, out / SITES_KEY_FILE
    if cache.is_file() and key_file.is_file():
        stored = json.loads(key_file.read_text())
        if stored.get("key") == key:
            return pl.read_parquet(cache), stored["missing"]
    sites, missing = read_sites(options, root, plates, wells, pool, console)
    if write_cache and not sites.is_empty():
        with disk_full_guard(out):
            sites.write_parquet(cache)
            key_file.write_text(json.dumps({"key": key, "missing": missing}))
    return sites, missing


def select_sites(options: PrepareOptions, root: Root, plates: pl.DataFrame, meta_dir: Path, meta: JumpMetadata,
                 pool: Executor, console: Console, write_cache: bool = True) -> Selection:
    """The :class:`Selection` of ``plates`` (the metadata's choice): load data, filter, order."""
    all_sites, missing = collect_sites(options, root, plates, meta_dir, meta.wells, pool, console, write_cache)
    sites = reference_filter(all_sites, options.min_sites)
    with_sites = plates.filter(pl.col("plate_id").is_in(sites["plate_id"].unique().to_list()))
    ordered = order_plates(with_sites, options.max_plates)["plate_id"].to_list()
    return Selection(plates, sites.filter(pl.col("plate_id").is_in(ordered)), ordered, missing, len(all_sites))


def check_selection(selection: Selection, root: Root, min_sites: int) -> None:
    """A :class:`DataError` when nothing is left to prepare: no load data at all, or nothing after the filter."""
    if len(selection.missing_load_data) == len(selection.plates):
        raise DataError(f"no load data found under {root.description} for any of the {len(selection.plates)} "
                        "selected plates (looked in cpg0016-jump/<source>/workspace/load_data_csv/<batch>/<plate>/)")
    if not selection.ordered:
        raise DataError(f"no poscon or DMSO site is left after the filter --min-sites {min_sites} "
                        f"({selection.n_sites_before_filter} sites before it); lower --min-sites")


def warn_missing(console: Console, missing: Sequence[str]) -> None:
    """One warning per plate without load data (one line for all beyond a few)."""
    for plate_id in missing[:_SHOWN_MISSING]:
        console.print(f"[yellow]warning:[/yellow] no load data for plate {plate_id}; it is left out")
    if len(missing) > _SHOWN_MISSING:
        console.print(f"[yellow]warning:[/yellow] no load data for {len(missing) - _SHOWN_MISSING} more plate(s); "
                      "they are left out")


__all__ = ["SITES_FILE", "SITES_KEY_FILE", "Selection", "check_selection", "collect_sites", "read_sites", "retry",
           "select_sites", "warn_missing"]
