"""On-disk memo of the uncorrected profiles' correction metrics, in the fold's models folder.

Every profile method of a fold and seed scores the same uncorrected well profiles (the same
featuriser on the same training and validation plates) before it scores its own corrected
ones, and the scores take about half a second (copairs' mAP, the neighbour searches). The
first run of a fold and seed stores them; every other one reads them back. The key is a
SHA-256 over the profiles' bytes and metadata, the seed, the source of
:mod:`benchmark.core.profiles.metrics` and the versions of the libraries it calls, so other
profiles, another seed or changed code never find a stale entry::

    <folder>/scores-<key digest[:24]>.json    {"format": 1, "key": <digest>, "scores": {...}}

Written under a temporary name and renamed into place; an entry that does not parse or holds
another key is reported on stderr, removed and computed again. Without a folder (an in-process
run) the scores are computed every time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as correction_metrics
from .data import Profiles

FORMAT = 1
PREFIX = "scores"
_LIBRARIES = ("numpy", "scipy", "scikit-learn", "harmonypy", "copairs")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """SHA-256 of the metrics module's source and the versions of the libraries it calls."""
    h = hashlib.sha256(Path(correction_metrics.__file__).read_bytes())
    for name in _LIBRARIES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"\0{name} {version}".encode())
    return h.hexdigest()


def scores_key(wells: Profiles, seed: int) -> str:
    """SHA-256 identifying the scores of ``wells`` with ``seed`` under the current metrics code."""
    h = hashlib.sha256(f"format {FORMAT} seed {seed} code {_code_digest()}".encode())
    h.update(np.ascontiguousarray(wells.x, dtype=np.float32).tobytes())
    for field in ("plate", "source", "well"):
        h.update(b"\0" + "\x1f".join(map(str, getattr(wells, field))).encode())
    h.update(np.ascontiguousarray(wells.label, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(wells.is_control, dtype=bool).tobytes())
    return h.hexdigest()


def cached_scores(folder: str | Path | None, wells: Profiles, seed: int,
                  compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The scores of ``wells`` from ``folder`` if stored, else ``compute()`` (then stored); and whether they were read."""
    if folder is None:
        return compute(), False
    key = scores_key(wells, seed)
    path = Path(folder) / f"{PREFIX}-{key[:24]}.json"
    stored = _read(path, key)
    if stored is not None:
        return stored, True
    scores = compute()
    _write(path, key, scores)
    return scores, False


def _read(path: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return _drop(path, f"{path.name} is unreadable ({type(exc).__name__}: {exc})")
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key \
            or not isinstance(entry.get("scores"), dict):
        return _drop(path, f"{path.name} holds other scores than its name says")
    return entry["scores"]


def _write(path: Path, key: str, scores: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w") as f:
            json.dump({"format": FORMAT, "key": key, "scores": scores}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:  # a full or read-only folder costs the scores next time, not this run
        pass
    finally:
        if tmp.exists():
            os.remove(tmp)


def _drop(path: Path, why: str) -> None:
    print(f"warning: correction scores cache: {why}; computing them again", file=sys.stderr, flush=True)
    try:
        os.remove(path)
    except OSError:
        pass
    return None
