"""The registered ``synthetic`` loader: generate on first use, cache, verify, regenerate if corrupt."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ...errors import BenchError, CorruptCacheError
from ...paths import cache_dir, ensure_writable
from ..registry import register_dataset
from ..dataset import Dataset, open_dataset
from .config import SimulatorConfig
from .generate import generate_synthetic

OVERRIDES = ("n_sources", "batches_per_source", "plates_per_batch", "sites_per_well", "image_size")


def cache_path(config: SimulatorConfig) -> Path:
    """Folder of the cached dataset of ``config``: ``cache_dir()/synthetic/{SIMULATOR_VERSION}-{hash}``."""
    return cache_dir() / "synthetic" / config.cache_key()


@register_dataset("synthetic", "a simulator of a JUMP-like experiment (the embedded default; generated on first use)")
def load_synthetic(seed: int = 0, severity: float = 1.0, size: str = "default", progress: bool = True,
                   **overrides) -> Dataset:
    """Open the synthetic dataset of these settings, generating it into the cache on first use.

    Parameters
    ----------
    seed, severity, size :
        See :class:`SimulatorConfig`.
    progress : bool
        Show a progress bar while generating.
    **overrides :
        Count overrides (``n_sources``, ``batches_per_source``, ``plates_per_batch``,
        ``sites_per_well``, ``image_size``).
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise BenchError(f"unknown synthetic option(s) {', '.join(unknown)}; valid: seed, severity, size, "
                         f"progress, {', '.join(OVERRIDES)}")
    config = SimulatorConfig(seed=seed, severity=severity, size=size, **overrides)
    folder = cache_path(config)
    ensure_writable(folder.parent, "synthetic dataset cache folder")
    if folder.is_dir():
        try:
            return open_dataset(folder, verify="full")
        except CorruptCacheError as exc:
            print(f"warning: cached synthetic dataset is corrupt ({exc}); regenerating {folder}", file=sys.stderr)
            shutil.rmtree(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate_synthetic(config, tmp, progress=progress)
        if folder.is_dir():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_dataset(folder, verify="full")
