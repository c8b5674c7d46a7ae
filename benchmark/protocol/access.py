"""What a method of each access level is handed of a target plate: the one place that decides it.

``adapt`` gets a plate's DMSO images at every access level but ``none``, and its treated images
(unlabelled, shuffled) only at ``unlabeled`` and ``transductive`` (:func:`handed`). Every host's
``predict`` scores all of the plate's treated images, so the evaluator sends the host those and only
the DMSO images ``adapt`` may see (:func:`sent`); the host (:class:`benchmark.protocol.evaluation.LocalHost`
or the sealed worker, :mod:`benchmark.sealed.worker`) cuts the view it hands ``adapt`` with :func:`handed`.
Labels, wells and image ids never reach a method at any level.

A *part* is whatever holds one side of a plate: image ids in the evaluator, pixel arrays in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..methods.base import AccessLevel

Part = TypeVar("Part")


def nothing_of(part: Any) -> Any:
    """The empty part of the same kind (``part[:0]``: no ids, no pixels)."""
    return part[:0]


def handed(access: AccessLevel, treated: Part, controls: Part,
           hide: Callable[[Part], Part] = nothing_of) -> tuple[Part, Part]:
    """``(treated, controls)`` of one plate as ``adapt`` of a method of ``access`` gets them.

    A part the method may not see is replaced by ``hide(part)`` (default :func:`nothing_of`).
    """
    return (treated if access.sees_treated else hide(treated),
            controls if access.sees_controls else hide(controls))


def sent(access: AccessLevel, treated: Part, controls: Part) -> tuple[Part, Part]:
    """``(treated, controls)`` of one plate as the evaluator sends them to the host of a method of ``access``:
    every treated image (``predict`` scores them all) and the DMSO images of :func:`handed`."""
    return treated, handed(access, treated, controls)[1]


__all__ = ["handed", "nothing_of", "sent"]
