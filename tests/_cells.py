"""Drawn cell images with known nuclei, for the segmentation and cell_count tests.

A nucleus is a bright dome on DNA (a soft-edged disk); its cell is a dimmer disk on RNA and ER
2.6 times as wide. Centres are drawn far enough apart that every nucleus stands alone, unless
a test places touching pairs itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from benchmark.constants import CHANNELS, DMSO_ID, DMSO_LABEL, POSCONS, dmso_wells
from benchmark.datasets.dataset import Dataset, open_dataset, write_dataset
from benchmark.datasets.store import write_shard

DNA, RNA, ER = CHANNELS.index("DNA"), CHANNELS.index("RNA"), CHANNELS.index("ER")
RADIUS = 3.5  # nucleus radius (pixels): ~7 px across, as on the default synthetic images


def disk(size: int, centre: tuple[float, float], radius: float, dome: bool = True) -> np.ndarray:
    """A disk with a soft edge, brighter at its centre when ``dome`` (float, peak 1)."""
    y, x = np.mgrid[:size, :size] + 0.5
    r = np.hypot(x - centre[0], y - centre[1]) / radius
    edge = 1 / (1 + np.exp((r - 1) / 0.1))
    return edge * (1 - 0.4 * r.clip(0, 1) ** 2) if dome else edge


def centres(rng: np.random.Generator, n: int, size: int, spacing: float = 3.2 * RADIUS,
            margin: float = RADIUS + 1) -> list[tuple[float, float]]:
    """``n`` centres at least ``spacing`` apart, ``margin`` inside the image (rejection sampling)."""
    out: list[tuple[float, float]] = []
    for _ in range(10_000):
        if len(out) == n:
            return out
        c = tuple(rng.uniform(margin, size - margin, size=2))
        if all(np.hypot(c[0] - o[0], c[1] - o[1]) >= spacing for o in out):
            out.append(c)
    raise ValueError(f"cannot place {n} nuclei {spacing} px apart in {size} px")


def cell_image(rng: np.random.Generator, nuclei: list[tuple[float, float]], size: int = 48,
               dome: bool = True) -> np.ndarray:
    """A uint8 image ``(5, size, size)``: the nuclei on DNA, cells on RNA and ER, noise everywhere."""
    stain = np.zeros((len(CHANNELS), size, size))
    for c in nuclei:  # touching nuclei and cells meet, they do not add up (as in the simulator)
        nucleus, halo = disk(size, c, RADIUS, dome), disk(size, c, 2.6 * RADIUS, dome=False)
        stain[DNA] = np.maximum(stain[DNA], 200 * nucleus)
        stain[RNA] = np.maximum(stain[RNA], 60 * halo + 80 * nucleus)
        stain[ER] = np.maximum(stain[ER], 50 * halo)
    return np.clip(stain + rng.normal(12, 3, size=stain.shape), 0, 255).astype(np.uint8)


def count_dataset(root: Path, counts: dict[int, int], dmso: tuple[int, ...] = (3, 4, 5), sources: int = 3,
                  density: tuple[int, ...] = (0, 1, 2), size: int = 48, seed: int = 0) -> Dataset:
    """A dataset (real control layout, 1 site per well, ``sources`` x 2 batches x 1 plate) whose images hold
    ``counts[label] + density[source]`` nuclei (DMSO: one of ``dmso``, plus the same density)."""
    rng = np.random.default_rng(seed)
    wells = [(w, p[0], p[2]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL, DMSO_ID) for w in dmso_wells()]
    rows, shards = [], []
    for s in range(sources):
        for b in range(2):
            plate = f"src{s}_b{b}_p0"
            images = []
            for i, (well, label, compound) in enumerate(sorted(wells)):
                n = (counts[label] if label >= 0 else dmso[i % len(dmso)]) + density[s]
                images.append(cell_image(rng, centres(rng, n, size), size))
                rows.append(dict(source=f"src{s}", batch=f"src{s}_b{b}", plate=plate, well=well, site=1,
                                 compound=compound, label=label, is_control=label == DMSO_LABEL,
                                 shard=len(shards), offset=len(images) - 1, nuclei=n))
            shards.append(write_shard(root, plate, np.stack(images)))
    table = pl.DataFrame(rows)
    index = table.drop("nuclei").with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64))
    write_dataset(root, "cells", "test", {"seed": seed, "size": size}, index, shards)
    np.save(root / "nuclei.npy", table["nuclei"].to_numpy())
    return open_dataset(root)


def true_counts(dataset: Dataset) -> np.ndarray:
    """The number of nuclei drawn in each image of a :func:`count_dataset`, by image id."""
    return np.load(Path(dataset.root) / "nuclei.npy")
