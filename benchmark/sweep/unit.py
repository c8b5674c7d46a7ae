"""Run one unit wherever it lands (a local worker process, this process, a SLURM job): one sealed run
through :func:`benchmark.protocol.loop.run_protocol`, which writes (or skips) its record.

:func:`run_unit` never raises for what the protocol reports as a user error: a :class:`BenchError`
becomes a ``failed`` :class:`UnitResult` with its message. A method's own failure is a failed record,
written by the protocol, and a ``failed`` result here.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BenchError
from .grid import Unit

STATUSES = ("ok", "skipped", "failed")


@dataclass(frozen=True)
class UnitResult:
    """What one unit did: ``ok`` (recorded now), ``skipped`` (already recorded) or ``failed``."""

    unit: Unit
    status: str
    seconds: float = 0.0
    out_of_domain_accuracy: float | None = None
    in_domain_accuracy: float | None = None
    error: str | None = None
    log: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unit status must be one of {', '.join(STATUSES)}, got {self.status!r}")


def run_unit(unit: Unit, log: Callable[[str], None] | None = None, verbose: bool = False) -> UnitResult:
    """Run ``unit`` through the protocol (one fold, one seed) and say what happened."""
    start = time.perf_counter()
    try:
        if unit.module:
            importlib.import_module(unit.module)  # registers a method this process has not imported yet
        from ..protocol.loop import run_protocol

        outcomes = run_protocol(**unit.run_kwargs(), log=log, verbose=verbose)
    except BenchError as exc:
        return UnitResult(unit, "failed", time.perf_counter() - start, error=str(exc))
    (outcome,) = outcomes
    return UnitResult(unit, outcome.status, outcome.seconds or (time.perf_counter() - start),
                      outcome.out_of_domain_accuracy, outcome.in_domain_accuracy, outcome.error)


__all__ = ["STATUSES", "UnitResult", "run_unit"]
