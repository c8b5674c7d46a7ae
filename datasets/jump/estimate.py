"""Expected download and disk size of a preparation run, announced before it starts."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ...constants import CHANNELS
from .fetch import Root
from .loaddata import key_columns

TYPICAL_TIFF_BYTES: dict[str, int] = {"source_3": 2_335_000, "source_8": 2_100_000}
"""Typical size of one raw 16-bit channel TIFF (Phenix ~1080², ImageXpress 1024²)."""
DEFAULT_TIFF_BYTES = 2_200_000
SAMPLE_SITES_PER_SOURCE = 3


@dataclass(frozen=True)
class Estimate:
    """What a run is expected to read and write."""

    n_plates: int
    n_sites: int
    download_bytes: int
    disk_bytes: int
    sampled: bool  # True if the TIFF size came from sampling real objects

    def describe(self, remote: bool) -> str:
        verb = "download" if remote else "read"
        how = "sampled TIFF sizes" if self.sampled else "typical TIFF sizes"
        return (f"{self.n_plates} plates, {self.n_sites:,} sites x {len(CHANNELS)} channels: "
                f"~{human_bytes(self.download_bytes)} to {verb} ({how}), "
                f"~{human_bytes(self.disk_bytes)} written to disk")


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def tiff_size_per_source(sites: pl.DataFrame, root: Root,
                         sample: int = SAMPLE_SITES_PER_SOURCE) -> tuple[dict[str, float], bool]:
    """Mean TIFF size per source from a few sampled objects (typical sizes where sampling fails)."""
    sizes: dict[str, float] = {}
    sampled = True
    for (source,), group in sites.group_by("source", maintain_order=True):
        found = [root.size(k) for row in group.head(sample).select(key_columns()).iter_rows() for k in row]
        found = [s for s in found if s]
        if found:
            sizes[source] = sum(found) / len(found)
        else:
            sizes[source] = TYPICAL_TIFF_BYTES.get(source, DEFAULT_TIFF_BYTES)
            sampled = False
    return sizes, sampled


def estimate(sites: pl.DataFrame, root: Root, crop: int) -> Estimate:
    """Expected bytes to read and to write for ``sites`` (one row per site still to prepare)."""
    if sites.is_empty():
        return Estimate(0, 0, 0, 0, True)
    sizes, sampled = tiff_size_per_source(sites, root)
    per_source = sites.group_by("source").agg(n=pl.len())
    download = sum(sizes[s] * n * len(CHANNELS) for s, n in per_source.iter_rows())
    disk = len(sites) * (len(CHANNELS) * crop * crop + 64)
    return Estimate(sites["plate_id"].n_unique(), len(sites), int(download), int(disk), sampled)
