"""What a sealed worker may not touch, computed by the evaluator from the dataset and the cache.

:func:`protected_files` names the dataset folder, the platebench cache and the dataset's own files (for
clear messages); :func:`run_policy` gives one run its allowlist: the code it runs, its own sealed fold folder
and, for a built-in method, the fold's source-model folder beside it (read-only: the evaluator writes it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..datasets.dataset import INDEX_FILE, META_FILE, Dataset
from ..errors import BenchError
from ..paths import CACHE_ENV
from .audit import Policy
from .foldstore import MODELS_DIR, SEALED_DIR

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
    """The dataset folder and the cache (resolved), with the dataset's own files named for messages.

    The worker's allowlist (Landlock, the audit hook) already keeps everything else out of reach; the names
    only make a refusal say what was tried."""
    root, cache_root = os.path.realpath(dataset.root), os.path.realpath(cache)
    files: dict[str, str] = {os.path.join(root, INDEX_FILE): INDEX_WHAT, os.path.join(root, META_FILE): META_WHAT}
    for info in dataset.meta.shards:
        files[os.path.realpath(os.path.join(root, info.file))] = "a pixel shard of the full dataset"
    folders = ((root, DATASET_WHAT), (os.path.join(cache_root, SEALED_DIR), SEALED_WHAT),
               (os.path.join(cache_root, MODELS_DIR), MODELS_WHAT), (cache_root, CACHE_WHAT))
    return ProtectedFiles(folders, files, {})


def run_policy(protected: ProtectedFiles, sealed_folder: Path, models: Path | None, readable: list[str],
               pids: tuple[int, ...] = ()) -> Policy:
    """The policy of one run: it may read ``readable`` (code), its ``sealed_folder`` and, for a built-in method,
    its fold's ``models`` folder; nothing else of the dataset or the cache (the worker adds its scratch folder
    as the one place it may write)."""
    allowed = (os.path.realpath(sealed_folder), *([os.path.realpath(models)] if models is not None else []))
    return Policy(protected=protected.folders, allowed=allowed, files=dict(protected.files), inodes={},
                  pids=tuple(pids), readable=(*readable, *allowed))


def check_environment(protected: ProtectedFiles, paths: list[str]) -> None:
    """Refuse to run when Python's own files (``sys.prefix``, the package) lie in a protected folder."""
    for path in paths:
        real = os.path.realpath(path)
        for folder, _ in protected.folders:
            if _under(real, folder):
                raise BenchError(f"{real} (Python or platebench itself) lies inside {folder}, which a sealed worker "
                                 f"may not read; keep the dataset and ${CACHE_ENV} outside the Python environment "
                                 f"and the code (e.g. export {CACHE_ENV}=~/.cache/platebench)")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
