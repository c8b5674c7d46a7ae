"""Cheating test methods (named ``_cheat_...``), one per way to reach target labels.

Each one returns the true label of every image it can match to a row of the full index
(one-hot probabilities) and uniform probabilities otherwise, so run in process (where the
paths exist) it scores 1.0, and where the paths are closed it scores at chance (1/8) or
its run fails naming what it tried. The paths are those of issue 10:

- ``_cheat_private_dataset``: ``train._dataset`` leads to the whole index and store;
- ``_cheat_offsets``: ``ImageArray._offsets`` of the target view (shard order is well order);
- ``_cheat_gc``: ``gc.get_objects()`` finds the evaluator's index DataFrame and pixel store;
- ``_cheat_open``, ``_cheat_np_load``, ``_cheat_pathlib``, ``_cheat_os_open``: the dataset's files,
  read with ``open``, ``np.load``, ``pathlib`` or ``os.open``;
- ``_cheat_hard_link``: makes a hard link to the files and reads that;
- ``_cheat_linked``: reads links (hard or symbolic) someone made beforehand (``$PLATEBENCH_CHEAT_LINKS``);
- ``_cheat_subprocess``: ``cat`` the files in a subprocess.

The file cheaters find the dataset folder in ``$PLATEBENCH_CHEAT_ROOT`` (a real cheater
would compute the cache path). Importing this module registers nothing: the ``cheaters``
fixture (tests/conftest.py) registers :data:`CHEAT_METHODS` for a test module.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from _toy_methods import Centroid
from benchmark.datasets.store import shard_filename
from benchmark.methods.base import AccessLevel

ROOT_ENV = "PLATEBENCH_CHEAT_ROOT"
LINKS_ENV = "PLATEBENCH_CHEAT_LINKS"


def digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=12).digest()


class Cheater(Centroid):
    """Answers by pixel digest -> label, learnt by :meth:`steal` in fit (uniform when unknown)."""

    access = AccessLevel.UNLABELED
    description = "test: cheats"

    def steal(self, train) -> dict[bytes, int]:
        raise NotImplementedError

    def fit(self, train, val, seed):
        super().fit(train, val, seed)
        self.answers_ = self.steal(train)
        return self

    def adapt(self, plate):
        self.plate_ = plate.plate
        return self

    def predict(self, images):
        probs = np.full((len(images), 8), 1 / 8)
        for i, image in enumerate(np.asarray(images)):
            label = self.answers_.get(digest(image), -1)
            if label >= 0:
                probs[i] = np.eye(8)[label]
        return probs


def _answers(index: pl.DataFrame, shard_pixels) -> dict[bytes, int]:
    """Digest -> label of every treated image, given the index and a function shard code -> pixels."""
    out = {}
    for (code,), rows in index.filter(~pl.col("is_control")).group_by("shard"):
        pixels = shard_pixels(int(code))
        for offset, label in zip(rows["offset"], rows["label"]):
            out[digest(pixels[offset])] = int(label)
    return out


class PrivateDataset(Cheater):
    name = "_cheat_private_dataset"

    def steal(self, train):
        dataset = train._dataset
        return _answers(dataset.index, lambda code: dataset.store._map(code))


class Offsets(Cheater):
    """Learns offset -> label on the training plates, then reads the target view's offsets."""

    name = "_cheat_offsets"

    def steal(self, train):
        ids = train.treated_ids()
        offsets = train.images(ids)._offsets
        self.by_offset_ = dict(zip(offsets.tolist(), train.labels(ids).tolist()))
        return {}

    def adapt(self, plate):
        self.plate_ = plate.plate
        self.labels_ = [self.by_offset_.get(int(o), -1) for o in plate.treated._offsets]
        return self

    def predict(self, images):
        probs = np.full((len(images), 8), 1 / 8)
        for i, label in enumerate(self.labels_[:len(images)]):
            if label >= 0:
                probs[i] = np.eye(8)[label]
        return probs


class GcWalk(Cheater):
    """Walks every live object for a DataFrame with labels of many plates and the pixel store that goes with it."""

    name = "_cheat_gc"

    def steal(self, train):
        with warnings.catch_warnings():  # isinstance() on every object touches deprecated torch attributes
            warnings.simplefilter("ignore")
            frames = [o for o in gc.get_objects() if isinstance(o, pl.DataFrame)
                      and {"label", "plate", "shard", "offset"} <= set(o.columns)]
        index = max(frames, key=lambda f: f["plate"].n_unique())
        stores = [o for o in gc.get_objects() if type(o).__name__ == "PackedStore"
                  and len(o.shards) == index["shard"].max() + 1]
        return _answers(index, lambda code: stores[0]._map(code)) if stores else {}


class FileCheater(Cheater):
    """Reads the full dataset's files (index, manifest, shards) through :meth:`read`."""

    def root(self) -> Path:
        return Path(os.environ[ROOT_ENV])

    def read(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def shard(self, path: Path) -> np.ndarray:
        return np.load(io.BytesIO(self.read(path)), allow_pickle=False)

    def steal(self, train):
        root = self.root()
        index = pl.read_parquet(io.BytesIO(self.read(root / "index.parquet")))
        shards = json.loads(self.read(root / "dataset.json"))["shards"]
        return _answers(index, lambda code: self.shard(root / shards[code]["file"]))


class Open(FileCheater):
    name = "_cheat_open"


class NpLoad(FileCheater):
    """Reads the index natively (polars: not seen by the audit hook), the shards with ``np.load``."""

    name = "_cheat_np_load"

    def steal(self, train):
        root = self.root()
        index = pl.read_parquet(root / "index.parquet")
        plates = dict(index.select("shard", "plate").unique().iter_rows())
        return _answers(index, lambda code: np.load(root / shard_filename(plates[code]), mmap_mode="r"))


class PathlibRead(FileCheater):
    name = "_cheat_pathlib"

    def read(self, path):
        return Path(path).read_bytes()


class OsOpen(FileCheater):
    name = "_cheat_os_open"

    def read(self, path):
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


class HardLink(FileCheater):
    """Hard-links each file into a folder of its own, then reads the link."""

    name = "_cheat_hard_link"

    def read(self, path):
        folder = Path(tempfile.mkdtemp(prefix="cheat-links-"))
        try:
            link = folder / Path(path).name
            os.link(path, link)
            return link.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class Linked(FileCheater):
    """Reads a mirror of the dataset folder made of links (made beforehand, outside the method)."""

    name = "_cheat_linked"

    def root(self):
        return Path(os.environ[LINKS_ENV])


class Cat(FileCheater):
    name = "_cheat_subprocess"

    def read(self, path):
        return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout


CHEATERS = [PrivateDataset, Offsets, GcWalk, Open, NpLoad, PathlibRead, OsOpen, HardLink, Linked, Cat]


class Native(FileCheater):
    """Reads everything natively, where the audit hook cannot see: the index with polars, the shards with
    ``torch.from_file``; a careful cheater that falls back to guessing when a read fails."""

    name = "_cheat_native"

    def steal(self, train):
        import torch

        root = self.root()
        try:
            index = pl.read_parquet(root / "index.parquet")
            plates = dict(index.select("shard", "plate").unique().iter_rows())
        except Exception:  # noqa: BLE001 - refused: guess instead
            return {}

        def shard(code: int) -> np.ndarray:
            path = str(root / shard_filename(plates[code]))
            raw = torch.from_file(path, shared=False, size=os.path.getsize(path), dtype=torch.uint8).numpy()
            start = 10 + int(raw[8]) + 256 * int(raw[9])  # .npy version 1: magic, version, header length
            header = ast.literal_eval(raw[10:start].tobytes().decode("latin1"))
            return raw[start:].reshape(header["shape"])

        try:
            return _answers(index, shard)
        except Exception:  # noqa: BLE001
            return {}


CHEAT_METHODS = (*CHEATERS, Native)
"""Every method of this module, as the ``cheaters`` fixture registers them."""
