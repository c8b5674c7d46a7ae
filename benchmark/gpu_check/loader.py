"""Stage ``loader``: images/s of the packed store against one 5-channel TIFF per site, cold and warm page cache."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .dataset import write_check_dataset
from .env import filesystem
from .sizes import Sizes


def _evict(paths: Sequence[Path]) -> None:
    """Drop the files' pages from the page cache (``POSIX_FADV_DONTNEED`` after an fsync; no effect on tmpfs)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class _Batches:
    """Item ``i``: batch ``i`` read by ``read`` (a picklable map-style dataset for a DataLoader)."""

    def __init__(self, read: Callable[[Any], Any], batches: list[Any]):
        self.read, self.batches = read, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        import torch

        return torch.from_numpy(self.read(self.batches[i]))


class _StoreReader:
    def __init__(self, root: Path, shards: tuple) -> None:
        self.root, self.shards = root, shards

    def __call__(self, batch: Any) -> Any:
        from ..datasets.store import PackedStore

        if not hasattr(self, "_store"):  # opened once per process (workers get a fresh one)
            self._store = PackedStore(self.root, self.shards)
        return self._store.read(*batch)

    def __getstate__(self) -> dict:
        return {"root": self.root, "shards": self.shards}


def _read_tiffs(paths: Sequence[str]) -> Any:
    import numpy as np
    import tifffile

    return np.stack([tifffile.imread(p) for p in paths])


def _rate(read: Callable[[Any], Any], batches: list[Any], workers: int, limit_s: float) -> dict[str, Any]:
    """Images/s reading ``batches`` in order, in this process or through ``workers`` processes: counted from the
    first batch on (worker start-up is reported apart), until all are read or ``limit_s`` has passed."""
    from torch.utils.data import DataLoader

    begin = time.perf_counter()
    source = iter((read(b) for b in batches) if workers == 0 else
                  DataLoader(_Batches(read, batches), batch_size=None, num_workers=workers, prefetch_factor=4))
    next(source)
    start, n = time.perf_counter(), 0
    for pixels in source:
        n += len(pixels)
        if time.perf_counter() - start > limit_s:
            break
    seconds = time.perf_counter() - start
    return {"images/s": round(n / seconds) if n else None, "images timed": n,
            "first batch s": round(start - begin, 2)}


def stage_loader(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """Images/s of the packed store against one TIFF per site, cold and warm, with and without loader workers."""
    import numpy as np
    import tifffile

    from ..core.training.accel import loader_workers

    sites = max(1, sizes.loader_images // (64 * 4))  # 4 plates of 64 wells when there are enough images
    data = write_check_dataset(work / "loader_store", max(1, sizes.loader_images // (64 * sites)), sites,
                               sizes.loader_px)
    tiffs = []
    for i in range(len(data.index)):
        path = work / "loader_tiff" / f"{i:06d}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, data.read(np.array([i]))[0], photometric="minisblack")
        tiffs.append(str(path))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(tiffs))
    chunks = [order[i:i + sizes.loader_batch] for i in range(0, len(order), sizes.loader_batch)]
    codes, offsets = data.index["shard"].to_numpy(), data.index["offset"].to_numpy()
    readers = {"packed store (mmap gather)": (lambda: _StoreReader(data.root, data.store.shards),
                                               [(codes[c], offsets[c]) for c in chunks],
                                               [data.root / s.file for s in data.store.shards]),
               "one TIFF per site (tifffile)": (lambda: _read_tiffs, [[tiffs[j] for j in c] for c in chunks],
                                                [Path(t) for t in tiffs])}
    mb = 5 * sizes.loader_px ** 2 / 1e6
    table = []
    for workers in sorted({0, loader_workers(sizes.device) or 1}):
        for name, (reader, batches, files) in readers.items():
            for cache in ("cold", "warm"):
                row = {"reader": name, "workers": workers, "page cache": cache}
                try:
                    gc.collect()  # the previous reader's memory maps are closed: their pages can be evicted
                    if cache == "cold":
                        _evict(files)
                    row.update(_rate(reader(), batches, workers, sizes.measure_s))
                    row["MB/s"] = round(row["images/s"] * mb) if row["images/s"] else None
                except Exception as exc:  # noqa: BLE001 - one failing reader (a worker's Bus error) is a result
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                table.append(row)
    return {"settings": {"images": len(tiffs), "image": f"5×{sizes.loader_px}×{sizes.loader_px} uint8",
                         "batch": sizes.loader_batch, "batches in random order": True,
                         "TIFF": "uncompressed, one 5-page file per site", "file system": filesystem(work),
                         "time box per measurement s": sizes.measure_s},
            "table": table}
