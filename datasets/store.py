"""The packed image store: one memory-mapped ``uint8`` array of shape ``(N, C, H, W)`` per plate.

A store knows pixels only: no labels, no metadata. Reading a batch of images is a
gather from memory maps, so no image file is decoded in a training loop. Shards are
written atomically (temporary file + rename) with a SHA-256 checksum, so a killed
writer never leaves a shard that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptCacheError

SHARD_DIR = "shards"


@dataclass(frozen=True)
class ShardInfo:
    """Manifest entry of one shard file (path relative to the dataset root)."""

    file: str
    n_images: int
    shape: tuple[int, int, int]
    n_bytes: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> ShardInfo:
        return cls(d["file"], int(d["n_images"]), tuple(d["shape"]), int(d["n_bytes"]), d["sha256"])


def shard_filename(plate: str) -> str:
    """A file-system-safe, collision-free shard name for a plate id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", plate)[:80]
    digest = hashlib.sha1(plate.encode()).hexdigest()[:8]
    return f"{SHARD_DIR}/{safe}-{digest}.npy"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_shard(root: Path, plate: str, images: np.ndarray) -> ShardInfo:
    """Write one plate's images ``(N, C, H, W)`` uint8 atomically and return its manifest entry."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"shard images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    rel = shard_filename(plate)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(images), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    info = ShardInfo(rel, int(images.shape[0]), tuple(int(s) for s in images.shape[1:]),
                     tmp.stat().st_size, file_sha256(tmp))
    os.replace(tmp, path)
    return info


def verify_shard(root: Path, info: ShardInfo, full: bool) -> None:
    """Raise :class:`CorruptCacheError` if a shard is missing, truncated or (``full``) altered."""
    path = root / info.file
    if not path.is_file():
        raise CorruptCacheError(f"shard {path} is missing")
    size = path.stat().st_size
    if size != info.n_bytes:
        raise CorruptCacheError(f"shard {path} has {size} bytes, manifest says {info.n_bytes} (truncated?)")
    if full and file_sha256(path) != info.sha256:
        raise CorruptCacheError(f"shard {path} does not match its SHA-256 checksum")


class PackedStore:
    """Read-only access to the shards of one dataset. Holds pixels only, never labels."""

    def __init__(self, root: Path, shards: Sequence[ShardInfo]):
        self.root = Path(root)
        self.shards = tuple(shards)
        self._maps: list[np.ndarray | None] = [None] * len(self.shards)

    def __getstate__(self) -> dict:  # memory maps are reopened in each worker process
        return {"root": self.root, "shards": self.shards, "_maps": [None] * len(self.shards)}

    def _map(self, code: int) -> np.ndarray:
        mm = self._maps[code]
        if mm is None:
            info = self.shards[code]
            try:
                mm = np.load(self.root / info.file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CorruptCacheError(f"cannot open shard {self.root / info.file}: {exc}") from None
            if mm.shape != (info.n_images, *info.shape):
                raise CorruptCacheError(f"shard {self.root / info.file} has shape {mm.shape}, "
                                        f"manifest says {(info.n_images, *info.shape)}")
            self._maps[code] = mm
        return mm

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shards[0].shape

    def read(self, shard_codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Gather images ``(N, C, H, W)`` uint8 by shard code and offset within the shard."""
        shard_codes = np.asarray(shard_codes, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        out = np.empty((len(offsets), *self.image_shape), dtype=np.uint8)
        if len(offsets) == 0:
            return out
        for code in np.unique(shard_codes):
            sel = np.flatnonzero(shard_codes == code)
            order = sel[np.argsort(offsets[sel], kind="stable")]  # sequential reads in the file
            out[order] = self._map(int(code))[offsets[order]]
        return out


class ImageArray:
    """A lazily read, read-only sequence of images ``(C, H, W)`` uint8.

    Indexing with an int, a slice or an integer array returns a NumPy array; only the
    requested images are read. It carries no identifiers and no labels.
    """

    __slots__ = ("_store", "_codes", "_offsets")

    def __init__(self, store: PackedStore, shard_codes: np.ndarray, offsets: np.ndarray):
        self._store = store
        self._codes = np.asarray(shard_codes, dtype=np.int64)
        self._offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._store.image_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._store.read(self._codes[[index]], self._offsets[[index]])[0]
        return self._store.read(self._codes[index], self._offsets[index])

    def __getattr__(self, name: str):  # only called for names that do not exist
        raise AttributeError(f"ImageArray has no attribute '{name}': it holds pixels only (index it, or "
                             "np.asarray it); labels and image ids stay with the evaluator")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)


class ArrayImages:
    """Images ``(C, H, W)`` uint8 held in memory, read like an :class:`ImageArray`.

    What the sealed worker hands a method for a target plate: the pixels the
    evaluator sent, and nothing else (no store, no shard offsets). As with an
    :class:`ImageArray`, every index returns a new array, so a method may change
    what it gets without changing the plate.
    """

    __slots__ = ("_pixels",)

    def __init__(self, pixels: np.ndarray):
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {pixels.dtype} {pixels.shape}")
        pixels = np.ascontiguousarray(pixels)
        pixels.flags.writeable = False
        self._pixels = pixels

    def __len__(self) -> int:
        return len(self._pixels)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._pixels.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __getitem__(self, index) -> np.ndarray:
        return np.array(self._pixels[index])

    def __getattr__(self, name: str):  # only called for names that do not exist
        raise AttributeError(f"ArrayImages has no attribute '{name}': it holds pixels only (index it, or "
                             "np.asarray it); labels and image ids stay with the evaluator")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)
