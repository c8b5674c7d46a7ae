"""Fetch and preprocess the sites of one plate with a bounded pool of workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Executor, wait
from dataclasses import dataclass

import numpy as np
import polars as pl

from ...constants import CHANNELS
from .fetch import ImageReadError, Root, fetch_image
from .manifest import SkippedSite
from .preprocess import preprocess_site

ROW_COLUMNS = ("plate_id", "source", "batch", "plate", "well", "site", "compound", "label", "is_control")


@dataclass(frozen=True)
class PlateImages:
    """A plate's preprocessed images ``(N, 5, crop, crop)``, their rows, and the skipped sites."""

    images: np.ndarray
    rows: pl.DataFrame
    skipped: tuple[SkippedSite, ...]
    n_bytes: int


@dataclass(frozen=True)
class _SiteResult:
    pixels: np.ndarray | None
    n_bytes: int
    skipped: SkippedSite | None


def _read_site(root: Root, site: dict, crop: int, attempts: int, backoff_s: float) -> _SiteResult:
    channels, n_bytes = [], 0
    for ch in CHANNELS:
        key = site[f"key_{ch}"]
        try:
            result = fetch_image(root, key, attempts, backoff_s)
        except ImageReadError as exc:
            return _SiteResult(None, n_bytes, SkippedSite(site["well"], int(site["site"]), exc.key, exc.reason))
        channels.append(result.pixels)
        n_bytes += result.n_bytes
    try:
        return _SiteResult(preprocess_site(channels, crop), n_bytes, None)
    except ValueError as exc:
        return _SiteResult(None, n_bytes, SkippedSite(site["well"], int(site["site"]), site[f"key_{CHANNELS[0]}"], str(exc)))


def prepare_plate(sites: pl.DataFrame, root: Root, pool: Executor, crop: int, attempts: int = 3,
                  backoff_s: float = 1.0, on_site: Callable[[int], None] | None = None,
                  on_skip: Callable[[SkippedSite], None] | None = None) -> PlateImages:
    """Read, preprocess and stack every site of one plate (sorted by well and site).

    Sites whose images are missing or unreadable after ``attempts`` tries are
    left out and listed in ``skipped``. A network error that outlasts its retries
    is raised (the plate is then not recorded and is redone on the next run).
    ``on_site(n_bytes)`` is called once per finished site, ``on_skip`` per skip.
    """
    sites = sites.sort("well", "site")
    rows = sites.to_dicts()
    futures = [pool.submit(_read_site, root, row, crop, attempts, backoff_s) for row in rows]
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    raise fut.exception()
                res = fut.result()
                if res.skipped is not None and on_skip:
                    on_skip(res.skipped)
                if on_site:
                    on_site(res.n_bytes)
    finally:
        for fut in pending:
            fut.cancel()
    results = [f.result() for f in futures]
    keep = [i for i, r in enumerate(results) if r.pixels is not None]
    images = (np.stack([results[i].pixels for i in keep]) if keep
              else np.empty((0, len(CHANNELS), crop, crop), dtype=np.uint8))
    return PlateImages(images=images, rows=sites.select(ROW_COLUMNS)[keep] if keep else sites.select(ROW_COLUMNS).clear(),
                       skipped=tuple(r.skipped for r in results if r.skipped is not None),
                       n_bytes=sum(r.n_bytes for r in results))
