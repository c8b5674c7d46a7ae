"""Scenarios: target conditions a fitted method is scored under, besides the plain evaluation.

``label_shift`` (Dirichlet class mix per plate), ``controls`` (DMSO budget), ``support``
(groups of n treated images) and ``severity`` (target plates re-rendered, simulator only).
See :mod:`benchmark.scenarios.base` for what a scenario is and :mod:`.runner` for how the
evaluator scores one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..datasets.dataset import Dataset
from ..errors import BenchError, UnknownNameError
from ..protocol.orders import DEFAULT_ORDER_SCHEME
from .base import Drawn, PlateCase, Scenario, case_rng
from .controls import Controls
from .label_shift import LabelShift
from .severity import Severity
from .support import Support

SCENARIO_NAMES = ("label_shift", "controls", "support", "severity")
_CLASSES = {"label_shift": LabelShift, "controls": Controls, "support": Support, "severity": Severity}


def get_scenario(name: str, order_scheme: str = DEFAULT_ORDER_SCHEME) -> Scenario:
    """A fresh scenario object by name, drawing its cuts under ``order_scheme`` (unknown names list the valid ones)."""
    if name not in _CLASSES:
        raise UnknownNameError("scenario", name, SCENARIO_NAMES)
    return _CLASSES[name](order_scheme)


def applicable(dataset: Dataset) -> tuple[str, ...]:
    """The scenarios that can run on ``dataset``, in their canonical order."""
    return tuple(n for n in SCENARIO_NAMES if get_scenario(n).not_applicable(dataset) is None)


def scenarios_option(text: str | None, quick: bool) -> str:
    """The ``--scenarios`` a command runs with: as given; unset, every one that applies (``"all"``), or none for a
    ``--quick`` smoke run, which checks fit and plain evaluation in a minute or two (scenario levels are most of a
    quick run's time: ~75% of a one-epoch CS-ARM-BN run)."""
    if text is not None:
        return text
    return "none" if quick else "all"


def parse_scenarios(text: str | Sequence[str] | None, dataset: Dataset) -> tuple[str, ...]:
    """``--scenarios`` to names: None or ``"all"`` = every one that applies to ``dataset``; ``"none"`` = none.

    Raises :class:`BenchError` for an unknown name, or one that cannot run on ``dataset`` (with why).
    """
    if text is None or text == "all":
        return applicable(dataset)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names in (["none"], []):
        return ()
    for name in names:
        reason = get_scenario(name).not_applicable(dataset)
        if reason:
            raise BenchError(f"scenario '{name}' cannot run on this dataset: {reason}; leave it out of --scenarios")
    return tuple(n for n in SCENARIO_NAMES if n in names)


__all__ = ["SCENARIO_NAMES", "Drawn", "PlateCase", "Scenario", "applicable", "case_rng", "get_scenario",
           "parse_scenarios", "scenarios_option"]
