"""Cache files a built-in method writes in its worker, carried to the evaluator, which alone stores them.

A sealed worker cannot write the platebench cache (it is read-only in the sandbox, and outside its Landlock
allowlist). A built-in method still keeps its fold's models (:mod:`benchmark.core.training.model_cache`), embeddings
(:mod:`benchmark.core.profiles.embedding_cache`) and correction scores (:mod:`benchmark.core.profiles.metrics_cache`) there,
through a folder in its scratch:

- :func:`prepare` (worker) makes ``<scratch>/models`` with a symbolic link to every file of the fold's models
  folder, so reading works as before; what the method writes there replaces a link with a real file;
- :func:`collect` (worker, at ``stop``) gathers the real files: names, sizes and bytes;
- :func:`store` (evaluator) checks each file — a plain name of a known kind, within the size limit, and
  parseable as what its name says (JSON, safetensors, ``.npz`` without pickles) — and writes it into the
  models folder atomically (temporary name, then rename). A plugin's run gets no models folder and its outbox
  is never read.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from ..errors import LeakageError

FOLDER = "models"
NAME = re.compile(r"^(model|emb|scores)-[0-9a-f]{8,64}(-[0-9a-f]{8,64})?\.(json|safetensors|npz)$")
"""File names a worker may hand back (the three caches' own naming)."""
MAX_BYTES = 4 << 30
"""Most bytes one run may hand back."""


def prepare(models: str, scratch: str) -> str:
    """``<scratch>/models`` with a link to each file of ``models`` (absent: empty); returns its path."""
    folder = os.path.join(scratch, FOLDER)
    os.makedirs(folder, exist_ok=True)
    try:
        entries = sorted(os.scandir(models), key=lambda e: e.name)
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and NAME.match(entry.name):
            os.symlink(entry.path, os.path.join(folder, entry.name))
    return folder


def collect(folder: str) -> tuple[list[dict], list[np.ndarray]]:
    """The files written in ``folder`` (not links, not temporary files): [{name, size}], [uint8 bytes]."""
    names, blobs = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and NAME.match(entry.name):
            data = np.fromfile(entry.path, dtype=np.uint8)
            names.append({"name": entry.name, "size": int(data.size)})
            blobs.append(data)
    return names, blobs


def check(names: object, blobs: list[np.ndarray]) -> list[tuple[str, bytes]]:
    """The (name, bytes) pairs of a worker's outbox after checking every one; raises LeakageError otherwise."""
    if not isinstance(names, list) or len(names) != len(blobs):
        raise LeakageError("the worker's outbox is malformed (names and files do not match)")
    total, out = 0, []
    for item, blob in zip(names, blobs):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not NAME.match(name):
            raise LeakageError(f"the worker handed back a file named {str(name)[:80]!r}, which is not a cache file")
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise LeakageError(f"the worker handed back {name} as {blob.dtype} {blob.shape}, not bytes")
        total += blob.size
        if total > MAX_BYTES:
            raise LeakageError(f"the worker handed back more than {MAX_BYTES >> 30} GB of cache files")
        data = blob.tobytes()
        problem = _content_problem(name, data)
        if problem:
            raise LeakageError(f"the worker handed back {name}, which {problem}")
        out.append((name, data))
    return out


def store(models: Path, files: list[tuple[str, bytes]]) -> list[str]:
    """Write checked files into the fold's ``models`` folder atomically; returns their names."""
    from ..records import write_bytes_atomic

    models.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        write_bytes_atomic(models / name, data)
    return [name for name, _ in files]


def _content_problem(name: str, data: bytes) -> str | None:
    """What is wrong with ``data`` as the kind of file ``name`` says it is, or None."""
    kind = name.rsplit(".", 1)[1]
    try:
        if kind == "json":
            value = json.loads(data)
            return None if isinstance(value, dict) else "is not a JSON object"
        if kind == "safetensors":
            (length,) = struct.unpack("<Q", data[:8])
            if length > len(data) - 8:
                return "is not a safetensors file (its header overruns the file)"
            header = json.loads(data[8:8 + length])
            return None if isinstance(header, dict) else "is not a safetensors file"
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            for key in archive.files:
                archive[key]  # noqa: B018 - reading each array checks it (and refuses pickled objects)
        return None
    except (ValueError, struct.error, OSError, EOFError, KeyError) as exc:
        return f"does not parse as {kind} ({type(exc).__name__}: {str(exc)[:120]})"


__all__ = ["FOLDER", "MAX_BYTES", "NAME", "check", "collect", "prepare", "store"]
