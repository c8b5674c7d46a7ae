"""The sealed fold store: a dataset folder holding only one fold's training and validation images.

For a (dataset fingerprint, split, split seed, fold) the parent process writes, once,
a dataset folder with only the fold's training and validation rows and new per-plate
shards holding only their pixels, plus ``fold.json`` saying which rows are training and
which validation. The sealed worker opens this folder instead of the full dataset:
the target plates and the in-domain test wells are simply not in it.

Rows are renumbered ``0..N-1`` in the order of the full index (new ids grow with the
old ones), and ``fold.json`` lists the training and validation rows in the fold's own
order, so a method sees the same images, in the same order, as from the full dataset.

Layout::

    $PLATEBENCH_CACHE/sealed/<dataset>-<fingerprint>/<split>-seed<split_seed>/fold<k>-<digest>/
        dataset.json  index.parquet  shards/*.npy  fold.json

``<digest>`` hashes the fold's image ids, so a change in how folds are drawn never
reuses a stale store. The folder is built under a temporary name and renamed into
place, so a killed build never leaves a store that looks complete; every seed and
method of the fold reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..datasets.dataset import Dataset, open_dataset, write_dataset
from ..datasets.store import write_shard
from ..errors import DataError
from ..paths import cache_dir, ensure_writable
from ..splits import Fold

FOLD_FILE = "fold.json"
FORMAT = 1
SEALED_DIR = "sealed"
MODELS_DIR = "models"


@dataclass(frozen=True)
class SealedFold:
    """A sealed fold store on disk: where it is, how big, and whether this call built it."""

    root: Path
    n_images: int
    n_bytes: int
    built: bool
    seconds: float

    def describe(self) -> str:
        verb = f"built in {self.seconds:.2f} s" if self.built else "reused"
        return f"sealed fold store {self.root} ({self.n_images} images, {self.n_bytes / 1e6:.1f} MB, {verb})"


def fold_digest(fold: Fold) -> str:
    """10 hex digits of SHA-256 over the fold's training and validation ids."""
    h = hashlib.sha256()
    for ids in (fold.train_ids, fold.val_ids):
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:10]


def sealed_root(cache: Path | None = None) -> Path:
    """The folder all sealed fold stores live under: ``cache_dir()/sealed``."""
    return (cache or cache_dir()) / SEALED_DIR


def sealed_path(dataset: Dataset, fold: Fold, split_seed: int, cache: Path | None = None) -> Path:
    """Where the sealed store of ``fold`` of ``dataset`` lives (see module docstring)."""
    return (sealed_root(cache) / f"{dataset.name}-{dataset.fingerprint}" / f"{fold.split}-seed{split_seed}"
            / f"fold{fold.index}-{fold_digest(fold)}")


def models_path(sealed_folder: Path | str) -> Path | None:
    """The fold's source-model folder (:mod:`benchmark.core.training.model_cache`) beside its sealed store:
    ``<cache>/sealed/<rest>`` -> ``<cache>/models/<rest>``; None for a folder outside a ``sealed`` tree.

    It holds only models trained on this fold's training data; a worker may read and write it and no other
    fold's (whose models were trained on labels that may cover this fold's target plates).
    """
    folder = Path(os.path.realpath(sealed_folder))
    for parent in folder.parents:
        if parent.name == SEALED_DIR:
            return parent.parent / MODELS_DIR / folder.relative_to(parent)
    return None


def ensure_sealed_fold(dataset: Dataset, fold: Fold, split_seed: int, cache: Path | None = None) -> SealedFold:
    """The sealed store of ``fold``: reused when a complete one exists, else built (atomically)."""
    final = sealed_path(dataset, fold, split_seed, cache)
    found = _complete(final, dataset, fold)
    if found is not None:
        return found
    if final.exists():
        print(f"warning: sealed fold store {final} is incomplete or stale; rebuilding it", file=sys.stderr)
        shutil.rmtree(final, ignore_errors=True)
    ensure_writable(final.parent, "sealed fold store folder")
    start = time.perf_counter()
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _write(tmp, dataset, fold, split_seed)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep its copy
            if _complete(final, dataset, fold) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done = _complete(final, dataset, fold)
    if done is None:
        raise DataError(f"sealed fold store {final} could not be built; delete it and rerun")
    return SealedFold(done.root, done.n_images, done.n_bytes, True, time.perf_counter() - start)


def _write(root: Path, dataset: Dataset, fold: Fold, split_seed: int) -> None:
    """Write the store of ``fold`` into ``root`` (a new folder)."""
    ids = np.union1d(fold.train_ids, fold.val_ids).astype(np.int64)  # sorted: new ids grow with old ones
    rows = dataset.index[ids]
    plates = rows["plate"].to_numpy()
    codes = np.empty(len(ids), dtype=np.int32)
    offsets = np.empty(len(ids), dtype=np.int32)
    shards = []
    for code, plate in enumerate(rows["plate"].unique(maintain_order=True).to_list()):
        sel = np.flatnonzero(plates == plate)
        codes[sel], offsets[sel] = code, np.arange(len(sel))
        shards.append(write_shard(root, plate, dataset.read(ids[sel])))
    index = rows.with_columns(pl.Series("image_id", np.arange(len(ids), dtype=np.int64)),
                              pl.Series("shard", codes), pl.Series("offset", offsets))
    settings = {"sealed_fold": {"dataset": dataset.name, "fingerprint": dataset.fingerprint, "split": fold.split,
                                "split_seed": split_seed, "fold": fold.index, "digest": fold_digest(fold)}}
    meta = write_dataset(root, dataset.name, dataset.meta.version, settings, index, shards,
                         f"sealed store of fold {fold.name} of {dataset.name} {dataset.fingerprint}: training and "
                         "validation images only")
    roles = {"format": FORMAT, "dataset": dataset.name, "fingerprint": dataset.fingerprint,
             "sealed_fingerprint": meta.fingerprint, "split": fold.split, "split_seed": split_seed,
             "fold": fold.index, "digest": fold_digest(fold), "n_images": len(ids),
             "n_bytes": sum(s.n_bytes for s in shards),
             "train": np.searchsorted(ids, fold.train_ids).tolist(),
             "val": np.searchsorted(ids, fold.val_ids).tolist()}
    (root / FOLD_FILE).write_text(json.dumps(roles))


def _complete(root: Path, dataset: Dataset, fold: Fold) -> SealedFold | None:
    """The store at ``root`` if it is complete and belongs to ``fold`` of ``dataset``, else None."""
    try:
        roles = read_roles(root)
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError, DataError):
        return None
    ok = (roles.get("format") == FORMAT and roles.get("fingerprint") == dataset.fingerprint
          and roles.get("digest") == fold_digest(fold) and meta.get("fingerprint") == roles.get("sealed_fingerprint")
          and all((root / s["file"]).is_file() and (root / s["file"]).stat().st_size == s["n_bytes"]
                  for s in meta.get("shards", [])))
    return SealedFold(root, int(roles["n_images"]), int(roles["n_bytes"]), False, 0.0) if ok else None


def read_roles(root: Path) -> dict:
    """``fold.json`` of a sealed store: which rows are training (``train``) and validation (``val``)."""
    path = Path(root) / FOLD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is missing or malformed ({exc}); delete {root} and rerun to rebuild it") from None


def open_sealed_fold(root: Path) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """Open a sealed store: the dataset and the ids of its training and validation rows (fold order)."""
    roles = read_roles(root)
    dataset = open_dataset(Path(root), verify="size")
    return dataset, np.asarray(roles["train"], dtype=np.int64), np.asarray(roles["val"], dtype=np.int64)
