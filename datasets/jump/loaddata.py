"""Per-plate load-data tables: one row per site with a URL per channel.

Two column forms exist: ``URL_Orig{Ch}`` (a full ``s3://`` URI) and the older
``FileName_Orig{Ch}`` + ``PathName_Orig{Ch}`` (URI = path + "/" + file). Every
column is read as a string (some plate ids are numeric). Image locations are
taken from these URLs only, never built.
"""

from __future__ import annotations

import gzip
import io

import polars as pl

from ...constants import CHANNELS
from ...errors import DataError
from .fetch import MissingObjectError, Root, url_to_key
from .metadata import normalize_well

LOAD_DATA_NAMES = ("load_data.csv", "load_data.csv.gz", "load_data_with_illum.csv",
                   "load_data_with_illum.csv.gz", "load_data_with_illum.parquet")
"""File names tried, in order, in a plate's load-data folder."""


def load_data_prefix(source: str, batch: str, plate: str) -> str:
    """The bucket folder of a plate's load-data files."""
    return f"cpg0016-jump/{source}/workspace/load_data_csv/{batch}/{plate}"


def key_columns() -> list[str]:
    """Names of the per-channel key columns of a parsed load-data table."""
    return [f"key_{ch}" for ch in CHANNELS]


def _read_any(data: bytes, name: str) -> pl.DataFrame:
    if name.endswith(".parquet"):
        table = pl.read_parquet(io.BytesIO(data))
        return table.select(pl.all().cast(pl.Utf8))
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return pl.read_csv(io.BytesIO(data), infer_schema=False)


def parse_load_data(data: bytes, where: str) -> pl.DataFrame:
    """Parse one load-data file into columns ``well, site, key_RNA .. key_DNA``.

    Raises :class:`DataError` naming ``where`` when the file is unreadable, lacks
    ``Metadata_Well``/``Metadata_Site`` or a channel column, holds a non-integer
    site, or a URL points outside the bucket.
    """
    try:
        table = _read_any(data, where)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a malformed file
        raise DataError(f"{where} is not a readable load-data table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ("Metadata_Well", "Metadata_Site") if c not in table.columns]
    exprs = []
    for ch in CHANNELS:
        if f"URL_Orig{ch}" in table.columns:
            exprs.append(pl.col(f"URL_Orig{ch}").alias(f"url_{ch}"))
        elif f"FileName_Orig{ch}" in table.columns and f"PathName_Orig{ch}" in table.columns:
            exprs.append(pl.concat_str(pl.col(f"PathName_Orig{ch}").str.strip_chars_end("/"),
                                       pl.col(f"FileName_Orig{ch}"), separator="/").alias(f"url_{ch}"))
        else:
            missing.append(f"URL_Orig{ch} (or FileName_Orig{ch} + PathName_Orig{ch})")
    if missing:
        raise DataError(f"{where} lacks column(s) {', '.join(missing)}; a JUMP load_data.csv has one row per "
                        "site with Metadata_Well, Metadata_Site and a URL column per channel")
    table = table.select(pl.col("Metadata_Well").alias("well"), pl.col("Metadata_Site").alias("site"), *exprs)
    bad_site = table.filter(~pl.col("site").str.strip_chars().str.contains(r"^[0-9]+$") | pl.col("site").is_null())
    if len(bad_site):
        raise DataError(f"{where}: Metadata_Site must be a whole number, found '{bad_site['site'][0]}'")
    if table.select(pl.any_horizontal(pl.all().is_null()).any()).item():
        raise DataError(f"{where}: empty well or URL values; replace the file with a fresh copy")
    keys: dict[str, list[str]] = {}
    for ch in CHANNELS:
        urls = table[f"url_{ch}"].to_list()
        keys[f"key_{ch}"] = [url_to_key(u, f"{where} row {i + 2} column {ch}") for i, u in enumerate(urls)]
    out = pl.DataFrame({
        "well": [normalize_well(w) for w in table["well"].to_list()],
        "site": table["site"].str.strip_chars().cast(pl.Int32),
        **keys,
    })
    return out.unique(["well", "site"], keep="first", maintain_order=True)


def read_load_data(root: Root, source: str, batch: str, plate: str) -> pl.DataFrame | None:
    """The parsed load data of one plate, or None if no load-data file exists for it."""
    prefix = load_data_prefix(source, batch, plate)
    for name in LOAD_DATA_NAMES:
        key = f"{prefix}/{name}"
        try:
            data = root.read(key)
        except MissingObjectError:
            continue
        return parse_load_data(data, f"{root.description.rstrip('/')}/{key}")
    return None
