"""The check dataset of stages ``loader`` and ``data_wait``: random uint8 images in the JUMP control layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plate_layout() -> list[tuple[str, int, str]]:
    from ..constants import DMSO_ID, DMSO_LABEL, POSCONS, dmso_wells

    return [(w, p[0], p[2]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL, DMSO_ID) for w in dmso_wells()]


def write_check_dataset(root: Path, plates: int, sites: int, px: int, seed: int = 0) -> Any:
    """A dataset of random uint8 images in the JUMP control layout (64 wells per plate, ``sites`` each), opened."""
    import numpy as np
    import polars as pl

    from ..constants import DMSO_LABEL
    from ..datasets.dataset import open_dataset, write_dataset
    from ..datasets.store import write_shard

    rng = np.random.default_rng(seed)
    rows, shards = [], []
    for p in range(plates):
        plate, images = f"check_b{p % 2}_p{p}", []
        for well, label, compound in _plate_layout():
            for site in range(1, sites + 1):
                rows.append(dict(source=f"src{p % 2}", batch=f"src{p % 2}_b{p}", plate=plate, well=well, site=site,
                                 compound=compound, label=label, is_control=label == DMSO_LABEL, shard=p,
                                 offset=len(images)))
                images.append(rng.integers(0, 256, size=(5, px, px), dtype=np.uint8))
        shards.append(write_shard(root, plate, np.stack(images)))
    index = pl.DataFrame(rows).with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64))
    write_dataset(root, "gpu_check", "1", {"plates": plates, "sites": sites, "px": px, "seed": seed}, index, shards)
    return open_dataset(root)
