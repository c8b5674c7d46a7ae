"""Describe a dataset: counts per source, batch, plate and class, as plain data."""

from __future__ import annotations

from typing import Any

import polars as pl

from ..constants import CLASS_NAMES
from .dataset import Dataset


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """Counts per source/batch/plate/class, controls and the fingerprint, JSON-serialisable."""
    idx = dataset.index
    treated = idx.filter(~pl.col("is_control"))
    per_class = treated.group_by("label").len().sort("label")
    plates = dataset.plate_table().sort("source", "batch", "plate")
    per_source = (idx.group_by("source").agg(
        batches=pl.col("batch").n_unique(), plates=pl.col("plate").n_unique(),
        treated=(~pl.col("is_control")).sum(), controls=pl.col("is_control").sum()).sort("source"))
    return {
        "name": dataset.name,
        "version": dataset.meta.version,
        "fingerprint": dataset.fingerprint,
        "root": str(dataset.root),
        "description": dataset.meta.description,
        "image_shape": list(dataset.image_shape),
        "channels": list(dataset.meta.channels),
        "n_images": len(idx),
        "n_treated": len(treated),
        "n_controls": len(idx) - len(treated),
        "n_sources": idx["source"].n_unique(),
        "n_batches": idx["batch"].n_unique(),
        "n_plates": idx["plate"].n_unique(),
        "sites_per_well": sorted(idx.group_by("plate", "well").len()["len"].unique().to_list()),
        "per_class": {CLASS_NAMES[r["label"]]: r["len"] for r in per_class.iter_rows(named=True)},
        "per_source": per_source.to_dicts(),
        "per_plate": plates.to_dicts(),
        "settings": dict(dataset.meta.settings),
    }
