"""One plate scored for a method's host: the plate loop of the plain evaluation and of every scenario.

:func:`score_plate` shuffles the plate's treated images with the caller's generator (one
``rng.permutation`` per plate, so the draws follow the plates in the caller's order), hands the
host a label-free :class:`PlateView` (those images in that order, plus the DMSO images the
method's access level allows: :func:`benchmark.protocol.access.sent`), checks what ``predict``
returned (:func:`benchmark.protocol.method_calls.check_probabilities`) and puts the probabilities
back in the order of the ids. The labels stay with the caller.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..constants import N_CLASSES
from ..datasets.dataset import Dataset, PlateView
from ..methods.base import AccessLevel
from .access import sent
from .method_calls import check_probabilities


class MethodHost(Protocol):
    """Where a method runs: in this process (:class:`benchmark.protocol.evaluation.LocalHost`) or in a
    sealed worker (:class:`benchmark.sealed.executor.SealedHost`)."""

    name: str
    access: AccessLevel
    min_controls: int

    def fit(self, seed: int, targets: Sequence[PlateView]) -> None:
        """``fit`` on the fold's training and validation sets (``targets``: transductive views); raises StageError."""

    def adapt_predict(self, full: PlateView) -> Any:
        """``adapt`` on ``full`` cut to the access level, then ``predict`` its treated images; raw output."""

    def fit_report(self) -> dict[str, Any]:
        """The method's fit report, once the plates are done."""


@dataclass(frozen=True)
class ScoredPlate:
    """What one plate gave: probabilities in the order of the ids, and the seconds it took."""

    probs: np.ndarray  # (len(treated_ids), N_CLASSES) float64; row i belongs to treated_ids[i]
    seconds: float     # the view drawn, adapt + predict in the host, the checks


def score_plate(host: MethodHost, images: Dataset, plate: str, treated_ids: np.ndarray, control_ids: np.ndarray,
                rng: np.random.Generator) -> ScoredPlate:
    """Hand ``host`` one view of ``plate`` (pixels read from ``images``) and return its checked probabilities.

    ``treated_ids`` are scored; ``control_ids`` are the DMSO images that go with them (sent only if the
    access level allows). Raises :class:`~benchmark.protocol.method_calls.StageError` when the method
    fails, :class:`~benchmark.errors.MethodError` when its output is not probabilities.
    """
    start = time.perf_counter()
    order = rng.permutation(len(treated_ids))
    treated, controls = sent(host.access, np.asarray(treated_ids)[order], control_ids)
    view = PlateView(plate, images.image_array(treated), images.image_array(controls))
    shuffled = check_probabilities(host.adapt_predict(view), len(order), N_CLASSES, host.name, plate)
    probs = np.empty_like(shuffled)
    probs[order] = shuffled  # view element i is treated_ids[order[i]]
    return ScoredPlate(probs, time.perf_counter() - start)


__all__ = ["MethodHost", "ScoredPlate", "score_plate"]
