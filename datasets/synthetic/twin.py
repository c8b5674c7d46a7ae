"""Severity twins: the same simulated dataset with its technical effects scaled, for counterfactual sweeps.

The simulator draws biology (cells, wells, compounds, phenotypes) and technical effects
(microscopes, stains, plates) from separate streams, so a configuration generated again at
another ``severity`` holds the same cells in the same wells and differs only in how the
microscope shows them. A twin is cached like any synthetic dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import BenchError, DataError
from ..dataset import Dataset
from .config import SIMULATOR_VERSION, SimulatorConfig
from .loader import OVERRIDES, cache_path, load_synthetic

_ALIGNED = ("image_id", "plate", "well", "site", "label", "is_control")


def severity_twin(dataset: Dataset, severity: float = 0.0, progress: bool = False) -> Dataset:
    """The same simulated dataset generated with technical effects scaled by ``severity`` (cached like any other).

    Raises
    ------
    BenchError
        For a dataset that is not simulated (no severity setting), or when the simulator of this
        installation no longer makes the dataset's configuration (another simulator version).
    DataError
        When the twin's images do not line up with the dataset's (same id, plate, well, site, label).
    """
    options = twin_options(dataset, severity)
    if options is None:
        return dataset
    settings = dict(dataset.meta.settings)
    twin = load_synthetic(severity=severity, progress=progress, **options)
    differ = sorted(k for k in set(settings) | set(twin.meta.settings)
                    if k != "severity" and settings.get(k) != twin.meta.settings.get(k))
    if differ:
        raise BenchError(f"the synthetic dataset at {dataset.root} was not made by this simulator's settings "
                         f"(at severity {severity:g} the settings differ in: {', '.join(differ)}); regenerate it "
                         "(`bench data synth`) or use the current default")
    check_aligned(dataset, twin)
    return twin


def twin_options(dataset: Dataset, severity: float) -> dict[str, Any] | None:
    """The :func:`load_synthetic` keywords (besides ``severity``) that make ``dataset``'s twin at ``severity``;
    None when the dataset is its own twin there. Raises :class:`BenchError` as :func:`severity_twin` does."""
    settings = dict(dataset.meta.settings)
    if dataset.name != "synthetic" or "severity" not in settings:
        raise BenchError(f"dataset '{dataset.name}' ({dataset.root}) has no severity setting; severity twins "
                         "exist for the synthetic simulator only")
    if float(settings["severity"]) == float(severity):
        return None
    made_by = settings.get("simulator_version")
    if made_by != SIMULATOR_VERSION:
        raise BenchError(f"the synthetic dataset at {dataset.root} was made by simulator {made_by}, this installation "
                         f"has {SIMULATOR_VERSION}; it can not make its severity-{severity:g} twin (use a dataset "
                         "of the current simulator: `bench data synth`)")
    return {k: settings[k] for k in ("seed", "size", *OVERRIDES) if settings.get(k) is not None}


def twin_cached(dataset: Dataset, severity: float) -> bool:
    """Whether ``dataset``'s twin at ``severity`` is in the cache already (opening it then renders nothing)."""
    options = twin_options(dataset, severity)
    return options is None or cache_path(SimulatorConfig(severity=severity, **options)).is_dir()


def check_aligned(dataset: Dataset, twin: Dataset) -> None:
    """Raise :class:`DataError` unless both index tables agree on every image's id, plate, well, site and label."""
    a, b = dataset.index.select(_ALIGNED), twin.index.select(_ALIGNED)
    if a.shape != b.shape or not all(np.array_equal(a[c].to_numpy(), b[c].to_numpy()) for c in _ALIGNED):
        raise DataError(f"the severity twin at {twin.root} does not line up with {dataset.root} (image ids, plates, "
                        "wells, sites or labels differ); delete the twin's cache folder and run again")


__all__ = ["check_aligned", "severity_twin", "twin_cached", "twin_options"]
