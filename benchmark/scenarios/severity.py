"""``severity`` (simulator only): the target plates rendered again with technical effects scaled.

The same cells, wells and biology, shown by microscopes, stains and plates whose every
deviation from the reference is multiplied by the level (0: every lab alike; 1: the
default; 3: three times the spread), while the method was trained on the dataset as it is:
a counterfactual sweep only a simulator can give. The re-rendered dataset is the
:func:`~benchmark.datasets.synthetic.twin.severity_twin` of the evaluated one, generated
once and cached like the dataset; the level equal to the dataset's own severity is the
plain evaluation.
"""

from __future__ import annotations

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
        """The dataset at severity ``level`` (generated on first use, then cached on disk and in this process)."""
        from ..datasets.synthetic.twin import severity_twin

        key = (dataset.fingerprint, level)
        if key not in _TWINS:
            _TWINS[key] = severity_twin(dataset, float(level), progress=False)
        return _TWINS[key]

    def cases(self, dataset: Dataset, level: str, plate: str, treated_ids: np.ndarray,
              control_ids: np.ndarray) -> list[PlateCase]:
        return [PlateCase(plate, np.asarray(treated_ids, dtype=np.int64), np.asarray(control_ids, dtype=np.int64),
                          self.twin(dataset, level))]


__all__ = ["LEVELS", "Severity"]
