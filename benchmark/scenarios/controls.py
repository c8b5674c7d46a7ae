"""``controls``: how many DMSO images of a target plate a method receives.

A real plate may carry 16 or 32 DMSO wells, or a handful. At level ``k`` each target plate's
DMSO images are cut to ``k`` drawn without replacement (all of them when the plate has
fewer: the block records how many were given); ``all`` is the plain evaluation. A method
that declares ``min_controls`` above ``k`` fails the level with that message; a method that
needs more than it gets and raises says so in its own words. Methods that never see
controls (access ``none``) are unchanged by this scenario.
"""

from __future__ import annotations

import numpy as np

from ..datasets.dataset import Dataset
from ..methods.base import AccessLevel
from .base import Drawn, PlateCase

LEVELS = ("all", "32", "8", "2")


class Controls(Drawn):
    """The DMSO budget per target plate."""

    name = "controls"
    levels = LEVELS
    description = "DMSO images handed to the method per target plate (all, 32, 8, 2)"

    def not_applicable(self, dataset: Dataset) -> str | None:
        return None

    def plain_level(self, dataset: Dataset) -> str | None:
        return "all"

    def unchanged_for(self, access: AccessLevel) -> bool:
        return not access.sees_controls

    def describe_level(self, level: str) -> str:
        return "every DMSO image of the plate" if level == "all" else f"{level} DMSO images per plate"

    def budget(self, level: str) -> int | None:
        """The number of DMSO images of a level (None: all)."""
        return None if level == "all" else int(level)

    def cases(self, dataset: Dataset, level: str, plate: str, treated_ids: np.ndarray,
              control_ids: np.ndarray) -> list[PlateCase]:
        controls = np.asarray(control_ids, dtype=np.int64)
        k = self.budget(level)
        if k is not None and k < len(controls):
            controls = np.sort(self.case_rng(dataset, level, plate).choice(controls, size=k, replace=False))
        return [PlateCase(plate, np.asarray(treated_ids, dtype=np.int64), controls, dataset)]


__all__ = ["LEVELS", "Controls"]
