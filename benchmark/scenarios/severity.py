"""``severity`` (simulator only): the target plates rendered again with technical effects scaled.

The same cells, wells and biology, shown by microscopes, stains and plates whose every
deviation from the reference is multiplied by the level (0: every lab alike; 1: the
default; 3: three times the spread), while the method was trained on the dataset as it is:
a counterfactual sweep only a simulator can give. The re-rendered dataset is the
:func:`~benchmark.datasets.synthetic.twin.severity_twin` of the evaluated one, generated
once and cached like the dataset; the level equal to the dataset's own severity is the
plain evaluation.

Rendering the twins takes minutes on a fresh machine (about as long as generating the dataset,
per twin), so the harness renders them before its runs start: :func:`prepare_twins`, called by
``bench run`` (:func:`benchmark.protocol.loop.run_protocol`, before the first run that scores this
scenario) and ``bench sweep`` (:func:`benchmark.sweep.dispatch.run_sweep`, in the parent process
before any unit starts), prints what it renders, how many and how long to stderr, and opens every
twin once per process. The evaluator reads the twins' pixels and hands them to the sealed worker
over its channel; the worker itself never opens a twin (nor the cache).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from ..datasets.dataset import Dataset
from ..methods.base import AccessLevel
from .base import Drawn, PlateCase

LEVELS = ("0", "0.5", "1", "2", "3")
_TWINS: dict[tuple[str, str], Dataset] = {}
"""Twins opened in this process (opening one verifies its checksums: once per process, not per run)."""


class Severity(Drawn):
    """Target plates re-rendered at technical severity 0 … 3 (training plates unchanged)."""

    name = "severity"
    levels = LEVELS
    description = "target plates re-rendered with technical effects scaled by 0, 0.5, 1, 2, 3 (simulator only)"

    def not_applicable(self, dataset: Dataset) -> str | None:
        if dataset.name != "synthetic" or "severity" not in dataset.meta.settings:
            return f"dataset '{dataset.name}' is not simulated: it cannot be rendered at another severity"
        return None

    def plain_level(self, dataset: Dataset) -> str | None:
        own = float(dataset.meta.settings["severity"])
        return next((level for level in self.levels if float(level) == own), None)

    def unchanged_for(self, access: AccessLevel) -> bool:
        return False

    def describe_level(self, level: str) -> str:
        return f"target plates rendered at severity {level}"

    def twin(self, dataset: Dataset, level: str) -> Dataset:
        """The dataset at severity ``level`` (rendered on first use, with progress: :func:`prepare_twins`)."""
        key = (dataset.fingerprint, level)
        if key not in _TWINS:
            prepare_twins(dataset)
        return _TWINS[key] if key in _TWINS else _open_twin(dataset, level)

    def cases(self, dataset: Dataset, level: str, plate: str, treated_ids: np.ndarray,
              control_ids: np.ndarray) -> list[PlateCase]:
        return [PlateCase(plate, np.asarray(treated_ids, dtype=np.int64), np.asarray(control_ids, dtype=np.int64),
                          self.twin(dataset, level))]


def twin_levels(dataset: Dataset) -> tuple[str, ...]:
    """The levels scored on a re-rendered twin of ``dataset`` (every level but the dataset's own severity)."""
    plain = Severity().plain_level(dataset)
    return tuple(level for level in LEVELS if level != plain)


def prepare_twins(dataset: Dataset, log: Callable[[str], None] | None = None) -> dict[str, Dataset]:
    """Every twin of ``dataset`` the scenario scores on (:func:`twin_levels`), by level: rendered into the cache
    where missing and opened for this process (opening verifies every shard's checksum).

    Progress goes to ``log`` (default: stderr): how many twins are rendered, each one's time and the time left;
    how long opening the cached ones took. Twins this process has open already are returned at once, silently.
    """
    from ..datasets.synthetic.twin import twin_cached

    say = log or _to_stderr
    levels = twin_levels(dataset)
    todo = [level for level in levels if (dataset.fingerprint, level) not in _TWINS]
    missing = [level for level in todo if not twin_cached(dataset, float(level))]
    start = time.perf_counter()
    if missing:
        from ..paths import cache_dir

        n_plates = dataset.index["plate"].n_unique()
        say(f"severity scenario: rendering {len(missing)} twin dataset(s) of {dataset.name} (severity "
            f"{', '.join(missing)}; {n_plates} plates, {len(dataset.index)} images each) into "
            f"{cache_dir() / 'synthetic'}; once per cache, every run reuses them")
    for i, level in enumerate(missing, 1):
        t0 = time.perf_counter()
        _open_twin(dataset, level)
        took, spent = time.perf_counter() - t0, time.perf_counter() - start
        left = spent / i * (len(missing) - i)
        say(f"severity twin {i}/{len(missing)} (severity {level}) rendered in {took:.1f} s"
            + (f"; about {left:.0f} s left" if i < len(missing) else f"; all rendered in {spent:.1f} s"))
    cached = [level for level in todo if level not in missing]
    if cached:
        t0 = time.perf_counter()
        for level in cached:
            _open_twin(dataset, level)
        say(f"severity scenario: opened {len(cached)} cached twin dataset(s) (severity {', '.join(cached)}) in "
            f"{time.perf_counter() - t0:.1f} s")
    return {level: _TWINS[(dataset.fingerprint, level)] for level in levels}


def _open_twin(dataset: Dataset, level: str) -> Dataset:
    """Render or open the twin at ``level`` and keep it for this process."""
    from ..datasets.synthetic.twin import severity_twin

    twin = severity_twin(dataset, float(level), progress=sys.stdout.isatty())  # rich's bar: a terminal only
    _TWINS[(dataset.fingerprint, level)] = twin
    return twin


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["LEVELS", "Severity", "prepare_twins", "twin_levels"]
