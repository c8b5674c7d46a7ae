"""The JUMP metadata tables (plate, well, microscope) and the reference plate selection.

The tables live in the GitHub repository ``jump-cellpainting/datasets`` (folder
``metadata/``). ``--metadata`` points at a folder with local copies; without it the
missing tables are downloaded over HTTPS from raw.githubusercontent.com into
``<out>/metadata/`` once.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ...errors import DataError

METADATA_URL = "https://raw.githubusercontent.com/jump-cellpainting/datasets/main/metadata/{name}"
PLATE_FILE, WELL_FILE, MICROSCOPE_FILE = "plate.csv.gz", "well.csv.gz", "microscope_config.csv"

PLATE_COLUMNS = ("Metadata_Source", "Metadata_Batch", "Metadata_Plate", "Metadata_PlateType")
WELL_COLUMNS = ("Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022")
MICROSCOPE_COLUMNS = ("Metadata_Source", "Metadata_Microscope_Name")

COMPOUND_PLATE_TYPE = "COMPOUND"
REFERENCE_DROPPED_BATCHES: dict[str, tuple[str, ...]] = {
    "source_3": ("CP_33_all_Phenix1", "CP_34_mix_Phenix1", "CP_35_all_Phenix1", "CP_36_all_Phenix1"),
}
"""Batches the reference study leaves out."""

_WELL = re.compile(r"^([A-Pa-p])0*([1-9][0-9]?)$")


def normalize_well(well: str) -> str:
    """``"a1"``, ``"A01"`` -> ``"A01"``; anything else is returned unchanged (and will not match)."""
    m = _WELL.match(well.strip())
    return f"{m.group(1).upper()}{int(m.group(2)):02d}" if m else well.strip()


@dataclass(frozen=True)
class JumpMetadata:
    """The tables needed to select plates and label wells (every column a string)."""

    plates: pl.DataFrame       # Metadata_Source, Metadata_Batch, Metadata_Plate, Metadata_PlateType
    wells: pl.DataFrame        # Metadata_Source, Metadata_Plate, Metadata_Well, Metadata_JCP2022
    microscopes: pl.DataFrame | None  # Metadata_Source, Metadata_Microscope_Name, ... (optional)


def _download(name: str, dest: Path) -> None:
    url = METADATA_URL.format(name=name)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"could not download {url} ({exc}); download the tables of "
                        "https://github.com/jump-cellpainting/datasets/tree/main/metadata yourself and pass "
                        "their folder with --metadata") from None
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def resolve_metadata(folder: Path | None, cache: Path, fetch_optional: bool = True) -> Path:
    """The folder holding the tables: ``folder`` if given, else ``cache`` filled from GitHub."""
    if folder is not None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"--metadata {folder} is not a folder; it must hold {PLATE_FILE} and {WELL_FILE}")
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    for name in (PLATE_FILE, WELL_FILE):
        if not (cache / name).is_file():
            _download(name, cache / name)
    if fetch_optional and not (cache / MICROSCOPE_FILE).is_file():
        try:
            _download(MICROSCOPE_FILE, cache / MICROSCOPE_FILE)
        except DataError:
            pass  # optional: only recorded in the dataset settings
    return cache


def read_table(path: Path, required: Sequence[str]) -> pl.DataFrame:
    """A CSV table (gzip or plain), every column a string; :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(f"metadata table {path} is missing; it comes from "
                        f"{METADATA_URL.format(name=path.name)}")
    data = path.read_bytes()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        table = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a malformed table
        raise DataError(f"metadata table {path} is not a readable CSV ({type(exc).__name__}: {exc}); "
                        "replace it with a fresh copy") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"metadata table {path} lacks column(s) {', '.join(missing)} "
                        f"(has: {', '.join(table.columns[:12])}); replace it with a fresh copy")
    return table


def load_metadata(folder: Path) -> JumpMetadata:
    """Read plate.csv.gz, well.csv.gz and (if present) microscope_config.csv from ``folder``."""
    plates = read_table(folder / PLATE_FILE, PLATE_COLUMNS)
    wells = read_table(folder / WELL_FILE, WELL_COLUMNS).with_columns(
        pl.col("Metadata_Well").map_elements(normalize_well, return_dtype=pl.Utf8))
    micro_path = folder / MICROSCOPE_FILE
    microscopes = read_table(micro_path, MICROSCOPE_COLUMNS) if micro_path.is_file() else None
    return JumpMetadata(plates, wells, microscopes)


def select_plates(meta: JumpMetadata, sources: Sequence[str],
                  dropped_batches: dict[str, tuple[str, ...]]) -> pl.DataFrame:
    """COMPOUND plates of ``sources`` minus dropped batches: columns source, batch, plate, plate_id.

    ``plate_id`` is ``{source}_{batch}_{plate}`` (never split it on ``_``).
    """
    plates = meta.plates.rename({"Metadata_Source": "source", "Metadata_Batch": "batch",
                                 "Metadata_Plate": "plate", "Metadata_PlateType": "plate_type"})
    known = set(plates["source"].unique().to_list())
    unknown = [s for s in sources if s not in known]
    if unknown:
        raise DataError(f"source(s) {', '.join(unknown)} are not in {PLATE_FILE}; "
                        f"valid sources: {', '.join(sorted(known))}")
    chosen = plates.filter(pl.col("source").is_in(list(sources)) & (pl.col("plate_type") == COMPOUND_PLATE_TYPE))
    for source, batches in dropped_batches.items():
        chosen = chosen.filter(~((pl.col("source") == source) & pl.col("batch").is_in(list(batches))))
    if chosen.is_empty():
        raise DataError(f"no {COMPOUND_PLATE_TYPE} plates left for source(s) {', '.join(sources)} "
                        "after the batch filter")
    chosen = chosen.unique(["source", "batch", "plate"], maintain_order=True).sort("source", "batch", "plate")
    return chosen.select("source", "batch", "plate").with_columns(
        plate_id=pl.concat_str("source", "batch", "plate", separator="_"))


def microscope_names(meta: JumpMetadata, sources: Sequence[str]) -> dict[str, str]:
    """Microscope name per source, where the microscope table is available."""
    if meta.microscopes is None:
        return {}
    rows = meta.microscopes.filter(pl.col("Metadata_Source").is_in(list(sources)))
    return dict(zip(rows["Metadata_Source"].to_list(), rows["Metadata_Microscope_Name"].to_list()))
