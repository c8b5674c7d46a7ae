"""On-disk cache of a frozen featuriser's embeddings, keyed by image content, in the fold's models folder.

A frozen featuriser gives the same embedding for the same pixels, so the profile methods
(:mod:`benchmark.core.profiles.pipeline`) embed each image of a fold once per featuriser: every later
run of the fold (another seed, another correction) reads the embeddings back. The images a
method sees arrive as plain arrays (target plates in a shuffled order, without ids), so the
key of an image is a hash of its bytes (SHA-256, truncated to 16 bytes: about 3x faster than
blake2b on CPUs with SHA instructions, which hash 13k images of 20 KB in 0.2 s) and the key of a file is the hash of its images' sorted
hashes: the same set of images finds the same file in whatever order it comes, and a new set of
images seen before (a scenario's subset of a plate) is assembled from what the run already read
or computed. ::

    <folder>/emb-<featuriser key digest[:16]>-<image set digest[:24]>.npz
        key          the featuriser's key (JSON): its name, weights digest, code digest, torch, device
        digests      (n, 16) uint8, the truncated SHA-256 of each image's bytes
        embeddings   (n, d) float32

A file is written under a temporary name and renamed into place; a file that does not load,
holds another key or other images is reported on stderr, removed, and the images are embedded
again. Where the folder is comes from the run: a sealed worker's fold folder
(:func:`benchmark.core.training.model_cache.current_fold`); without one (an in-process run) nothing
is written and the featuriser's own in-memory memo is all there is.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 2  # 1: blake2b image digests
PREFIX = "emb"
DIGEST_BYTES = 16


def image_digests(images: np.ndarray) -> np.ndarray:
    """The SHA-256 of every image's bytes, truncated: ``(n, 16)`` uint8."""
    out = np.empty((len(images), DIGEST_BYTES), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.frombuffer(hashlib.sha256(np.ascontiguousarray(image)).digest()[:DIGEST_BYTES], dtype=np.uint8)
    return out


def set_digest(digests: np.ndarray) -> str:
    """SHA-256 of a set of image digests, independent of their order."""
    rows = np.unique(np.ascontiguousarray(digests).view(f"V{DIGEST_BYTES}").ravel())
    return hashlib.sha256(rows.tobytes()).hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    """SHA-256 of a featuriser key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CacheStats:
    """What the cache did in this process (images, files, bytes, seconds)."""

    images_cached: int = 0      # images whose embeddings were read from a file or kept from earlier in the run
    images_embedded: int = 0    # images run through the featuriser
    files_read: int = 0
    files_written: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    hash_s: float = 0.0         # hashing image bytes
    read_s: float = 0.0         # reading cache files
    embed_s: float = 0.0        # running the featuriser
    write_s: float = 0.0        # writing cache files
    not_saved: str | None = None  # why a file could not be written (a full or read-only folder), if one could not

    def report(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("hash_s", "read_s", "embed_s", "write_s"):
            out[k] = round(out[k], 3)
        return out


class EmbeddingCache:
    """Embeddings of one featuriser, by image content, in ``folder`` (None: no disk cache); see the module docstring.

    Parameters
    ----------
    folder : the fold's models folder, or None (nothing is read or written).
    key : what identifies the featuriser (JSON-serialisable); None also disables the disk cache
        (a featuriser without a weights digest cannot be told apart from another one).
    """

    def __init__(self, folder: str | Path | None, key: dict[str, Any] | None):
        self.folder = Path(folder) if folder is not None and key is not None else None
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str)) if key is not None else None
        self.stats = CacheStats()
        self._memo: dict[bytes, np.ndarray] = {}  # every embedding read or computed so far, by image digest

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def report(self) -> dict[str, Any]:
        """For a fit report: whether a folder is used (never its path) and the counts so far."""
        return {"folder": "fold models folder" if self.enabled else None, **self.stats.report()}

    def path(self, digests: np.ndarray) -> Path:
        """The file that holds (or will hold) the embeddings of the images with ``digests``."""
        if self.folder is None or self.key is None:
            raise ValueError("this EmbeddingCache has no folder")
        return self.folder / f"{PREFIX}-{key_digest(self.key)[:16]}-{set_digest(digests)[:24]}.npz"

    def embed(self, images: np.ndarray, embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Embeddings of ``images`` (``(n, C, H, W)`` uint8), read from the cache or computed by ``embed`` and kept."""
        images = np.asarray(images)
        if self.folder is None or len(images) == 0:
            return self._compute(images, embed)
        start = time.perf_counter()
        digests = image_digests(images)
        self.stats.hash_s += time.perf_counter() - start
        path = self.path(digests)
        cached = self._read(path, digests)
        if cached is not None:
            return cached
        keys = [bytes(d) for d in digests]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]  # a new set of images seen before (a subset)
        if todo:
            for i, row in zip(todo, self._compute(images[todo], embed)):
                self._memo[keys[i]] = row
        self.stats.images_cached += len(keys) - len(todo)
        out = np.stack([self._memo[k] for k in keys]).astype(np.float32)
        self._write(path, digests, out)
        return out

    def _compute(self, images: np.ndarray, embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        start = time.perf_counter()
        out = np.asarray(embed(images), dtype=np.float32)
        self.stats.embed_s += time.perf_counter() - start
        self.stats.images_embedded += len(images)
        return out

    def _read(self, path: Path, digests: np.ndarray) -> np.ndarray | None:
        start = time.perf_counter()
        try:
            with np.load(path, allow_pickle=False) as data:
                key, stored, embeddings = json.loads(str(data["key"])), data["digests"], data["embeddings"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:  # truncated, not a zip, missing arrays
            return self._drop(path, f"{path.name} is unreadable ({type(exc).__name__}: {exc})")
        if key != {"format": FORMAT, **self.key}:
            return self._drop(path, f"{path.name} holds the embeddings of another featuriser (key mismatch)")
        if stored.shape != (len(embeddings), DIGEST_BYTES) or embeddings.ndim != 2:
            return self._drop(path, f"{path.name} holds other images than its name says")
        if np.array_equal(stored, digests):  # the same images in the same order (the usual case)
            out = embeddings.astype(np.float32)
        elif set_digest(stored) == set_digest(digests):
            row = {bytes(d): i for i, d in enumerate(stored)}
            out = embeddings[[row[bytes(d)] for d in digests]].astype(np.float32)
        else:
            return self._drop(path, f"{path.name} holds other images than its name says")
        self._memo.update(zip((bytes(d) for d in digests), out))
        self.stats.read_s += time.perf_counter() - start
        self.stats.images_cached += len(digests)
        self.stats.files_read += 1
        self.stats.bytes_read += path.stat().st_size
        return out

    def _write(self, path: Path, digests: np.ndarray, embeddings: np.ndarray) -> None:
        start = time.perf_counter()
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(json.dumps({"format": FORMAT, **self.key}, sort_keys=True)),
                         digests=digests, embeddings=embeddings.astype(np.float32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self.stats.files_written += 1
            self.stats.bytes_written += path.stat().st_size
        except OSError as exc:  # a full or read-only folder costs an embedding pass next time, not this run
            self.stats.not_saved = f"{type(exc).__name__}: {exc}"
        finally:
            if tmp.exists():
                os.remove(tmp)
        self.stats.write_s += time.perf_counter() - start

    def _drop(self, path: Path, why: str) -> None:
        print(f"warning: embedding cache: {why}; embedding those images again", file=sys.stderr, flush=True)
        try:
            os.remove(path)
        except OSError:
            pass
        return None
