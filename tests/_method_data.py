"""A small toy split shared by the method tests: train/val/target plates of ``make_toy_dataset``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import polars as pl

import benchmark.core.sampler as sampler_module


def split(dataset):
    """(train, val, target plates) — target is source src3 (held out), val is batch b2 of the others."""
    index = dataset.index
    target = index.filter(pl.col("source") == "src3")
    rest = index.filter(pl.col("source") != "src3")
    val = rest.filter(pl.col("batch").str.ends_with("_b2"))
    train = rest.filter(~pl.col("batch").str.ends_with("_b2"))
    return dataset.labelled(train), dataset.labelled(val), target


def view(dataset, target, plate, seed=0, with_controls=True):
    """The label-free view of one target plate and the labels of its treated images in view order."""
    rows = target.filter((pl.col("plate") == plate) & ~pl.col("is_control"))
    v, order = dataset.plate_view(plate, rows["image_id"].to_numpy(), np.random.default_rng(seed), with_controls)
    return v, rows["label"].to_numpy()[order]


def shifted(images, gain, offset):
    """Images with a per-channel gain and offset (clipped to uint8)."""
    x = np.asarray(images, dtype=np.float64) * np.asarray(gain)[None, :, None, None]
    return np.clip(x + np.asarray(offset)[None, :, None, None], 0, 255).astype(np.uint8)


@contextmanager
def recorded_batch_plates(dataset) -> Iterator[list[set[str]]]:
    """Inside: the plates of every batch the one-plate sampler draws are appended, a set per batch."""
    plate_of = dataset.index["plate"].to_numpy()
    seen: list[set[str]] = []
    original = sampler_module.plate_batches

    def spy(*args, **kwargs):
        batches = original(*args, **kwargs)
        seen.extend(set(plate_of[b.image_ids]) for b in batches)
        return batches

    sampler_module.plate_batches = spy
    try:
        yield seen
    finally:
        sampler_module.plate_batches = original
