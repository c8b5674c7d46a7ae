"""``support``: the target plate arrives in groups of ``n`` treated images, each adapted on its own.

A compound may occupy only a few wells, or images may stream in from the microscope. At
level ``n`` each target plate's treated images are shuffled (seeded per plate) and cut into
consecutive groups of ``n`` (the last group holds the remainder); each group is one
adapt/predict call, with all the plate's DMSO images; every image is scored once. ``all``
is the plain evaluation. Methods that do not see treated images in ``adapt`` (access
``none`` or ``controls``) are unchanged by this scenario.
"""

from __future__ import annotations

import numpy as np

from ..datasets.dataset import Dataset
from ..methods.base import AccessLevel
from .base import Drawn, PlateCase

LEVELS = ("all", "32", "8")


class Support(Drawn):
    """Groups of ``n`` treated images of a target plate, adapted and predicted separately."""

    name = "support"
    levels = LEVELS
    description = "treated images of a target plate adapted in groups of n (all, 32, 8)"

    def not_applicable(self, dataset: Dataset) -> str | None:
        return None

    def plain_level(self, dataset: Dataset) -> str | None:
        return "all"

    def unchanged_for(self, access: AccessLevel) -> bool:
        return not access.sees_treated

    def describe_level(self, level: str) -> str:
        return "the whole plate at once" if level == "all" else f"groups of {level} treated images"

    def cases(self, dataset: Dataset, level: str, plate: str, treated_ids: np.ndarray,
              control_ids: np.ndarray) -> list[PlateCase]:
        treated = np.asarray(treated_ids, dtype=np.int64)
        controls = np.asarray(control_ids, dtype=np.int64)
        if level == "all":
            return [PlateCase(plate, treated, controls, dataset)]
        n = int(level)
        shuffled = self.case_rng(dataset, level, plate).permutation(treated)
        return [PlateCase(plate, np.sort(shuffled[i:i + n]), controls, dataset)
                for i in range(0, len(shuffled), n)]


__all__ = ["LEVELS", "Support"]
