"""Shared fixtures: a small hand-built dataset for tests of the machinery.

``toy_dataset`` is deliberately simple and fast (not the simulator): 4 sources x 3
batches x 2 plates, the real control layout, 1 site per well, 16x16 pixels. Its
class signal is a per-class spatial pattern; each source multiplies channels by a
gain and adds an offset, so BN adaptation has something to undo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmark.constants import DMSO_ID, DMSO_LABEL, POSCONS, dmso_wells
from benchmark.datasets.dataset import open_dataset, write_dataset
from benchmark.datasets.store import write_shard


def make_toy_dataset(root: Path, n_sources: int = 4, n_batches: int = 3, n_plates: int = 2,
                     sites: int = 1, size: int = 16, seed: int = 0, shift: float = 1.0):
    """Write a toy dataset to ``root`` and return it opened."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 1, size=(len(POSCONS), 5, size, size))
    rows, shards = [], []
    wells = [(w, p[0], p[2]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL, DMSO_ID) for w in dmso_wells()]
    for s in range(n_sources):
        gain = 1 + shift * rng.uniform(-0.4, 0.4, size=5)
        offset = shift * rng.uniform(-20, 20, size=5)
        for b in range(n_batches):
            for p in range(n_plates):
                plate = f"src{s}_b{b}_p{p}"
                images = []
                for well, label, compound in wells:
                    for site in range(1, sites + 1):
                        base = rng.normal(0, 1, size=(5, size, size))
                        if label >= 0:
                            base += 1.2 * patterns[label]
                        img = 100 + 25 * base
                        img = img * gain[:, None, None] + offset[:, None, None]
                        images.append(np.clip(img, 0, 255).astype(np.uint8))
                        rows.append(dict(source=f"src{s}", batch=f"src{s}_b{b}", plate=plate, well=well,
                                         site=site, compound=compound, label=label,
                                         is_control=label == DMSO_LABEL, shard=len(shards),
                                         offset=len(images) - 1))
                shards.append(write_shard(root, plate, np.stack(images)))
    index = pl.DataFrame(rows).with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64))
    write_dataset(root, "toy", "test", {"seed": seed, "size": size, "shift": shift}, index, shards)
    return open_dataset(root)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def prepare_app():
    """A typer app with ``bench data``'s ``prepare`` command alone (the JUMP preparation tests)."""
    import typer

    from benchmark.cli.prepare import attach_prepare

    data_app = typer.Typer()

    @data_app.callback()
    def main() -> None:
        """data"""

    attach_prepare(data_app)
    return data_app
