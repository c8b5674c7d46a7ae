"""What a scenario is: a rule that changes what the evaluator hands a method for each target plate.

A scenario never touches training: one fitted model is scored at every level of every
scenario. For each target plate a level yields one or more :class:`PlateCase` (the treated
images to score, the DMSO images that go with them, and where the pixels come from);
the evaluator hands each case to the method as an ordinary plate view, scores the
predictions with the labels it keeps, and writes one block per level into the run's record.

Every random choice of a scenario is drawn from :meth:`Drawn.case_rng`
(:func:`benchmark.protocol.orders.case_rng` under the scenario's ``order_scheme``), keyed by the
dataset's order key (``keyed-v1``: which the sealed worker cannot compute), the scenario, the
level and the plate name only: every method, seed and fold sees the same cut of the same plate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..datasets.dataset import Dataset
from ..methods.base import AccessLevel
from ..protocol.orders import DEFAULT_ORDER_SCHEME, check_scheme, public_case_rng
from ..protocol.orders import case_rng as keyed_case_rng


@dataclass(frozen=True)
class PlateCase:
    """One adapt/predict call under a scenario level: which images of ``plate`` the method gets.

    ``treated_ids`` are scored (the method sees them only if its access level allows);
    ``control_ids`` are the plate's DMSO images it may use; the pixels of both are read from
    ``images`` (the dataset itself, or its re-rendered twin for ``severity``).
    """

    plate: str
    treated_ids: np.ndarray
    control_ids: np.ndarray
    images: Dataset


class Scenario(Protocol):
    """A named family of target conditions (see the module docstring)."""

    name: str
    levels: tuple[str, ...]
    description: str

    def not_applicable(self, dataset: Dataset) -> str | None:
        """Why the scenario cannot be run on ``dataset`` (None: it can)."""

    def plain_level(self, dataset: Dataset) -> str | None:
        """The level that is the ordinary evaluation (its numbers are the plain metrics), or None."""

    def unchanged_for(self, access: AccessLevel) -> bool:
        """True when no level changes what a method of this access level receives or is scored on."""

    def cases(self, dataset: Dataset, level: str, plate: str, treated_ids: np.ndarray,
              control_ids: np.ndarray) -> list[PlateCase]:
        """The adapt/predict calls of ``plate`` at ``level`` (ids sorted within each case)."""

    def describe_level(self, level: str) -> str:
        """One line saying what the level hands a method."""


class Drawn:
    """Base of the built-in scenarios: the order scheme their cuts are drawn under (one per scenario object)."""

    name: str

    def __init__(self, order_scheme: str = DEFAULT_ORDER_SCHEME):
        self.order_scheme = check_scheme(order_scheme)

    def case_rng(self, dataset: Dataset, level: str, plate: str) -> np.random.Generator:
        """The generator of this scenario's cut of ``plate`` at ``level`` (:func:`benchmark.protocol.orders.case_rng`)."""
        return keyed_case_rng(dataset, self.name, level, plate, self.order_scheme)


def case_rng(scenario: str, level: str, plate: str) -> np.random.Generator:
    """The public-v0 generator of one (scenario, level, plate) (records made before keyed orders)."""
    return public_case_rng(scenario, level, plate)


__all__ = ["Drawn", "PlateCase", "Scenario", "case_rng"]
