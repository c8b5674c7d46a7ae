"""Expected download and disk size of a preparation run, announced before it starts.

The download is ``sites x 5 channels x TIFF size``; the TIFF size of a source is the mean
size of the objects of a few of its sites (:data:`SAMPLE_SITES_PER_SOURCE`), asked of the
root without reading an image (a ``stat`` on a local mirror, a HEAD request on S3), or
:data:`TYPICAL_TIFF_BYTES` where that fails. The disk size is ``sites x 5 x crop²`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ...constants import CHANNELS
from .fetch import Root
from .loaddata import key_columns

TYPICAL_TIFF_BYTES: dict[str, int] = {"source_3": 2_335_000, "source_8": 2_100_000}
"""Typical size of one raw 16-bit channel TIFF (Phenix ~1080², ImageXpress 1024²: 2 bytes per pixel)."""
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
    tiff_bytes: float = 0.0  # the TIFF size used (mean over the sources of a combined estimate)

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


def tiff_size(sites: pl.DataFrame, root: Root, sample: int = SAMPLE_SITES_PER_SOURCE) -> tuple[float, bool]:
    """Mean TIFF size of one source's first ``sample`` sites (sizes only, no image read) and whether it
    was sampled; the source's typical size where no object answers."""
    found = [root.size(k) for row in sites.head(sample).select(key_columns()).iter_rows() for k in row]
    found = [s for s in found if s]
    if found:
        return sum(found) / len(found), True
    return float(TYPICAL_TIFF_BYTES.get(sites["source"][0], DEFAULT_TIFF_BYTES)), False


def _estimate(sites: pl.DataFrame, root: Root, crop: int) -> Estimate:
    tiff_bytes, sampled = tiff_size(sites, root)
    download = tiff_bytes * len(sites) * len(CHANNELS)
    disk = len(sites) * (len(CHANNELS) * crop * crop + 64)
    return Estimate(sites["plate_id"].n_unique(), len(sites), int(download), int(disk), sampled, tiff_bytes)


def estimate_by_source(sites: pl.DataFrame, root: Root, crop: int) -> dict[str, Estimate]:
    """One :class:`Estimate` per source of ``sites`` (one row per site still to prepare); reads no image."""
    return {source: _estimate(group, root, crop)
            for (source,), group in sites.group_by("source", maintain_order=True)}


def estimate(sites: pl.DataFrame, root: Root, crop: int) -> Estimate:
    """Expected bytes to read and to write for ``sites`` (one row per site still to prepare)."""
    if sites.is_empty():
        return Estimate(0, 0, 0, 0, True)
    parts = list(estimate_by_source(sites, root, crop).values())
    n_sites = sum(p.n_sites for p in parts)
    return Estimate(sites["plate_id"].n_unique(), n_sites, sum(p.download_bytes for p in parts),
                    sum(p.disk_bytes for p in parts), all(p.sampled for p in parts),
                    sum(p.tiff_bytes * p.n_sites for p in parts) / n_sites)
