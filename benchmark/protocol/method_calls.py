"""What the evaluator checks of a method's calls: failures of a stage, and ``predict``'s output.

Shared by the evaluator (:mod:`benchmark.protocol.evaluation`), the scenario runner
(:mod:`benchmark.scenarios.scoring`) and the sealed host, so that a plate of a scenario
level is checked exactly as a plate of the plain evaluation.
"""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np

from ..errors import BenchError, MethodError

PROB_TOLERANCE = 1e-3
"""How far a row of ``predict``'s output may sum away from 1."""


class RemoteError(Exception):
    """An exception raised by a method in a sealed worker, as the evaluator learns of it."""

    def __init__(self, type_name: str, message: str, trace: str | None = None, bench: bool = False):
        super().__init__(message)
        self.type_name, self.trace, self.bench = type_name, trace, bench


class StageError(Exception):
    """A method failed in one stage (``fit``, ``adapt`` or ``predict``); wraps the original error."""

    def __init__(self, stage: str, plate: str | None, error: BaseException):
        where = f" on plate {plate}" if plate else ""
        remote = isinstance(error, RemoteError)
        if (error.bench if remote else isinstance(error, BenchError)):
            message = f"{stage}{where}: {error}"
        else:
            message = f"{stage}{where} raised {error.type_name if remote else type(error).__name__}: {error}"
        super().__init__(message)
        self.stage, self.plate, self.error = stage, plate, error

    @property
    def traceback_text(self) -> str | None:
        """The method's traceback (None for a :class:`BenchError`, whose message says it all)."""
        if isinstance(self.error, RemoteError):
            return None if self.error.bench else self.error.trace
        if isinstance(self.error, BenchError):
            return None
        return "".join(traceback.format_exception(type(self.error), self.error, self.error.__traceback__))


def check_probabilities(probs: Any, n_images: int, n_classes: int, method: str, plate: str) -> np.ndarray:
    """Validate ``predict``'s output: shape ``(N, n_classes)``, finite, non-negative, rows summing to 1."""
    where = f"method '{method}' predict() on plate {plate}"
    try:
        probs = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise not_probabilities(method, plate, type(probs).__name__) from None
    if probs.shape != (n_images, n_classes):
        raise MethodError(f"{where} returned shape {probs.shape}; expected ({n_images}, {n_classes}): "
                          "one row of class probabilities per image")
    if not np.isfinite(probs).all():
        raise MethodError(f"{where} returned {int((~np.isfinite(probs)).sum())} non-finite values "
                          "(NaN or inf); check the training loss")
    if (probs < -PROB_TOLERANCE).any():
        raise MethodError(f"{where} returned negative probabilities; apply a softmax")
    worst = float(np.abs(probs.sum(axis=1) - 1).max()) if n_images else 0.0
    if worst > PROB_TOLERANCE:
        raise MethodError(f"{where} returned rows that sum to 1 ± {worst:.3g} (tolerance {PROB_TOLERANCE}); "
                          "return probabilities (softmax), not logits")
    return probs


def not_probabilities(method: str, plate: str, type_name: str) -> MethodError:
    """The error for a ``predict`` that returned something that is not an array (``type_name``)."""
    return MethodError(f"method '{method}' predict() on plate {plate} returned {type_name}, not an array of "
                       "probabilities")


__all__ = ["PROB_TOLERANCE", "RemoteError", "StageError", "check_probabilities", "not_probabilities"]
