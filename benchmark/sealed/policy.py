"""What a sealed worker may not touch, computed by the evaluator from the dataset and the cache.

:func:`protected_files` walks the dataset folder and the platebench cache once and
names every file in them (and its inode, so a hard link elsewhere is recognised);
:func:`run_policy` cuts that down for one run: everything except the run's own
sealed fold folder and the fold's source-model folder beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..datasets.dataset import INDEX_FILE, META_FILE, Dataset
from ..errors import BenchError
from ..paths import CACHE_ENV
from .audit import Policy
from .foldstore import MODELS_DIR, SEALED_DIR, models_path

INDEX_WHAT = "the full dataset index, which holds target labels"
META_WHAT = "the full dataset's manifest"
DATASET_WHAT = "inside the full dataset's folder"
CACHE_WHAT = "inside the platebench cache, outside this run's sealed fold folder"
SEALED_WHAT = "another fold's sealed store, whose training labels may cover this fold's target plates"
MODELS_WHAT = "another fold's source models, trained on labels that may cover this fold's target plates"


@dataclass(frozen=True)
class ProtectedFiles:
    """The protected folders and every file and folder in them: descriptions and inodes."""

    folders: tuple[tuple[str, str], ...]
    files: dict[str, str]
    inodes: dict[tuple[int, int], str]


def protected_files(dataset: Dataset, cache: Path) -> ProtectedFiles:
    """Walk the dataset folder and the cache (resolved) and describe what is in them."""
    root, cache_root = os.path.realpath(dataset.root), os.path.realpath(cache)
    files: dict[str, str] = {os.path.join(root, INDEX_FILE): INDEX_WHAT, os.path.join(root, META_FILE): META_WHAT}
    for info in dataset.meta.shards:
        files[os.path.realpath(os.path.join(root, info.file))] = "a pixel shard of the full dataset"
    inodes: dict[tuple[int, int], str] = {}
    for folder in (root, cache_root):
        for path in _walk(folder):
            files.setdefault(path, SEALED_WHAT if _under(path, os.path.join(cache_root, SEALED_DIR))
                             else MODELS_WHAT if _under(path, os.path.join(cache_root, MODELS_DIR)) else "")
            try:
                st = os.stat(path)
            except OSError:
                continue
            inodes[(st.st_dev, st.st_ino)] = path
    folders = ((root, DATASET_WHAT), (cache_root, CACHE_WHAT))
    return ProtectedFiles(folders, {p: w for p, w in files.items() if w}, inodes)


def run_policy(protected: ProtectedFiles, sealed_folder: Path, pids: tuple[int, ...] = (),
               sockets: tuple[str, ...] = ()) -> Policy:
    """The policy of one run: ``protected`` minus ``sealed_folder`` (which the worker reads) and the fold's
    source-model folder beside it (which the worker reads and writes: :func:`~.foldstore.models_path`)."""
    models = models_path(sealed_folder)
    allowed = (os.path.realpath(sealed_folder), *([str(models)] if models is not None else []))
    keep = {k: p for k, p in protected.inodes.items() if not any(_under(p, a) for a in allowed)}
    files = {p: w for p, w in protected.files.items() if not any(_under(p, a) for a in allowed)}
    return Policy(protected=protected.folders, allowed=allowed, files=files, inodes=keep,
                  sockets=tuple(sockets), pids=tuple(pids))


def check_environment(protected: ProtectedFiles, paths: list[str]) -> None:
    """Refuse to run when Python's own files (``sys.prefix``, the package) lie in a protected folder."""
    for path in paths:
        real = os.path.realpath(path)
        for folder, _ in protected.folders:
            if _under(real, folder):
                raise BenchError(f"{real} (Python or platebench itself) lies inside {folder}, which a sealed worker "
                                 f"may not read; keep the dataset and ${CACHE_ENV} outside the Python environment "
                                 f"and the code (e.g. export {CACHE_ENV}=~/.cache/platebench)")


def _walk(folder: str) -> list[str]:
    out = [folder]
    for dirpath, dirnames, filenames in os.walk(folder):
        out += [os.path.join(dirpath, d) for d in dirnames] + [os.path.join(dirpath, f) for f in filenames]
    return out


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
