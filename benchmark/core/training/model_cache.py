"""The model cache: a ResNet trained once per fold, seed and config, loaded by every run that would train it again.

An ERM model is shared by the methods that start from it (AdaBN, TENT, DeYO, ROID); every other ResNet method
caches its own, so a fitted run can be scored again (for example to add scenario blocks to its record) without
training (see :class:`benchmark.methods._convnet.ConvNetMethod`).

A cached model is identified by its **key**: the fold (dataset name and fingerprint, split, split seed, fold
index and the digest of its training/validation ids), the training seed, the ERM hyper-parameters, the device and
the **training code digest** (a SHA-256 of the source files that shape ERM training, and the versions of torch and numpy).
It is stored as two files in the fold's models folder::

    <folder>/model-<digest of the key>.safetensors   the weights (safetensors: never pickle)
    <folder>/model-<digest of the key>.json          the key, the SHA-256 of the weights file, the training report

Both are written under temporary names and renamed into place (weights first, description last), so a killed
write never leaves a pair that looks complete. :meth:`SourceCache.load` re-hashes the weights, compares the key
and the tensor names and shapes with the model: a corrupt, truncated or mismatched entry is reported on stderr,
removed, and the caller retrains.

Where the folder is comes from the run: a sealed worker opens :func:`fold_scope` around ``fit`` with the fold's
:class:`FoldIdentity` (label-free: names, a fingerprint and a digest of image ids) and its models folder
(``$PLATEBENCH_CACHE/models/<dataset>-<fingerprint>/<split>-seed<s>/fold<k>-<digest>/``, the only part of the
platebench cache besides its sealed fold store the worker may read and write). Outside a scope
(:func:`current_fold` is None: an in-process run) nothing is cached and methods train as usual.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ...source_digest import source_digest

FORMAT = 1
PREFIX = "model"


@dataclass(frozen=True)
class FoldIdentity:
    """Which fold a run trains on (no labels, no image ids: names, a fingerprint, a digest), and its models folder."""

    dataset: str
    fingerprint: str
    split: str
    split_seed: int
    fold: int
    digest: str  # hashes the fold's training and validation ids (benchmark.sealed.foldstore.fold_digest)
    folder: str  # the fold's models folder

    def key(self) -> dict[str, Any]:
        """The fold's part of a cache key (everything but the folder)."""
        out = asdict(self)
        del out["folder"]
        return out


_CURRENT: contextvars.ContextVar[FoldIdentity | None] = contextvars.ContextVar("platebench_fold", default=None)


@contextmanager
def fold_scope(identity: FoldIdentity | None) -> Iterator[None]:
    """Inside: :func:`current_fold` is ``identity`` (the sealed worker opens it around ``fit``)."""
    token = _CURRENT.set(identity)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_fold() -> FoldIdentity | None:
    """The fold of the ``fit`` running now, or None outside a sealed worker's :func:`fold_scope`."""
    return _CURRENT.get()


_TRAINING_CODE = ("benchmark.core.training", "benchmark.core.recipe", "benchmark.datasets.dataset",
                  "benchmark.datasets.store", "benchmark.methods._convnet", "benchmark.methods.base", "benchmark.methods.erm")
"""What shapes a trained ResNet: two whole packages of ``benchmark.core`` (every module below their folders) and
five modules. The encoders and profile packages never run while a ResNet trains, so editing them keeps the cached
models; a new module of the training or recipe packages counts from the start."""


@lru_cache(maxsize=1)
def training_code_digest() -> str:
    """SHA-256 of the source that shapes ERM training (:data:`_TRAINING_CODE`), with the versions of torch and numpy.

    Not to be confused with a record's ``code`` (:func:`benchmark.records.code_version`: the git commit of a run).
    """
    return source_digest(_TRAINING_CODE, f"torch {torch.__version__} numpy {np.__version__}", file_labels=True)


def key_digest(key: dict[str, Any]) -> str:
    """SHA-256 of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _warn(message: str) -> None:
    print(f"warning: source-model cache: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Entry:
    """A cached source model: its weights and the report of the training that made them."""

    state: dict[str, torch.Tensor]
    report: dict[str, Any]


class SourceCache:
    """The source models of one folder (one fold); see the module docstring."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        """The weights file and the description file of ``key``."""
        stem = f"{PREFIX}-{key_digest(key)[:24]}"
        return self.folder / f"{stem}.safetensors", self.folder / f"{stem}.json"

    def load(self, key: dict[str, Any], like: dict[str, torch.Tensor]) -> Entry | None:
        """The entry of ``key`` if it is complete, intact and fits ``like`` (names, shapes, dtypes); else None.

        A damaged or mismatched entry is reported on stderr and removed (the caller retrains and saves it again).
        """
        weights, meta = self.paths(key)
        try:
            desc = json.loads(meta.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self._drop(key, f"{meta} is unreadable ({exc})")
        if desc.get("format") != FORMAT or desc.get("key") != json.loads(json.dumps(key, default=str)):
            return self._drop(key, f"{meta} describes another model (key mismatch)")
        try:
            data = weights.read_bytes()
        except OSError as exc:
            return self._drop(key, f"{weights} is unreadable ({exc})")
        if hashlib.sha256(data).hexdigest() != desc.get("sha256"):
            return self._drop(key, f"{weights} does not match its SHA-256 (corrupt or truncated)")
        try:
            state = load_tensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            return self._drop(key, f"{weights} is not a valid safetensors file ({exc})")
        expected = {k: (tuple(v.shape), v.dtype) for k, v in like.items()}
        if {k: (tuple(v.shape), v.dtype) for k, v in state.items()} != expected:
            return self._drop(key, f"{weights} does not fit the model (tensor names, shapes or dtypes differ)")
        return Entry(state, dict(desc.get("report", {})))

    def save(self, key: dict[str, Any], state: dict[str, torch.Tensor], report: dict[str, Any]) -> Path:
        """Write the entry of ``key`` atomically (temporary files renamed into place); returns the weights path.

        The folder must exist (a sealed worker may not create folders in the cache: its worker made it).
        """
        weights, meta = self.paths(key)
        data = save_tensors({k: v.detach().cpu().contiguous() for k, v in state.items()})
        desc = {"format": FORMAT, "key": key, "sha256": hashlib.sha256(data).hexdigest(), "n_bytes": len(data),
                "report": report}
        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for path, payload in ((weights, data), (meta, json.dumps(desc, sort_keys=True, default=str).encode())):
            tmp = path.with_name(path.name + tag)
            try:
                with open(tmp, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    os.remove(tmp)
        return weights

    def _drop(self, key: dict[str, Any], why: str) -> None:
        _warn(f"{why}; retraining it")
        for path in self.paths(key):
            try:
                os.remove(path)
            except OSError:
                pass
        return None


def source_cache() -> SourceCache | None:
    """The cache of the running fold (None outside a :func:`fold_scope`)."""
    fold = current_fold()
    return SourceCache(fold.folder) if fold is not None else None
