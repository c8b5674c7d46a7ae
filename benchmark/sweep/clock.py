"""The sweep's clock: the wall time the units left to run are expected to take, and the time the sweep took.

The expectation replays the executor's schedule (:class:`~benchmark.sweep.schedule.Schedule`: the plan's
order, a unit never before its prerequisite, ``jobs`` units at once) with each unit's expected run time
(:attr:`Plan.estimates <benchmark.sweep.plan.Plan>`: the median ``worker.wall_s`` of the earlier records of
its method, split and config). A unit whose method and split have no record of that config to go by is *unknown*: it counts as
no time in the replay and is named, so the figure is a floor for what it covers. The actual time is
measured from the sweep's start (shared preparation, e.g. rendering severity twins, included) to its end;
:func:`append_clock` keeps one JSON line per finished sweep in ``<logs>/sweeps.jsonl``.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .grid import Unit
from .plan import Plan
from .schedule import Schedule

CLOCK_FILE = "sweeps.jsonl"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 12 s``, ``2 h 05 min``."""
    s = round(seconds)
    if s < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{max(seconds, 0):.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def replay(order: Sequence[Unit], waits: Mapping[Unit, Unit], seconds: Mapping[Unit, float], jobs: int) -> float:
    """The wall time of running ``order`` on ``jobs`` workers as the executors do (the same :class:`Schedule`):
    whenever a worker is free it takes the next unit whose prerequisite has finished; ``seconds`` per unit."""
    schedule = Schedule(order, waits)
    running: list[tuple[float, int, Unit]] = []  # (end time, tie-break, unit)
    now, tick = 0.0, 0
    while schedule.pending or running:
        while len(running) < max(jobs, 1):
            unit = schedule.take()
            if unit is None:
                break
            tick += 1
            heapq.heappush(running, (now + seconds.get(unit, 0.0), tick, unit))
        if not running:  # only possible with a prerequisite cycle, which prerequisites() never makes
            break
        now, _, unit = heapq.heappop(running)
        schedule.finish(unit)
    return now


@dataclass(frozen=True)
class Expected:
    """The expected wall time of a plan's units left to run."""

    seconds: float | None       # replayed wall time of the units with a recorded run time (None: no unit has one)
    serial_s: float             # the same units one after the other
    jobs: int                   # units at once in the replay
    units: int                  # units left to run
    known: int                  # of those, with a recorded run time
    unknown: dict[str, list[str]]  # method -> splits without an earlier record (their units count as unknown)

    def line(self) -> str:
        """One line for the start of the sweep."""
        if not self.units:
            return "expected wall time: nothing left to run"
        at_once = f"{self.jobs} at once" if self.jobs > 1 else "one at a time"
        if self.seconds is None:
            text = f"expected wall time: unknown ({self.units} units to run, {at_once}; no earlier record of them)"
        else:
            text = (f"expected wall time: {duration(self.seconds)} for {self.known} of {self.units} units to run "
                    f"({at_once}; {duration(self.serial_s)} of runs, from the earlier records' worker.wall_s)")
        if self.unknown and self.seconds is not None:
            what = "; ".join(f"{m} ({', '.join(s)})" for m, s in sorted(self.unknown.items()))
            text += f"; unknown for {self.units - self.known} unit(s) without an earlier record: {what}"
        return text


def expected(plan: Plan, jobs: int) -> Expected:
    """The expected wall time of ``plan.todo`` on ``jobs`` workers (module docstring)."""
    todo = set(plan.todo)
    known = {u: float(s) for u, s in plan.estimates.items() if s is not None and u in todo}
    unknown: dict[str, list[str]] = {}
    for unit in plan.todo:
        if unit not in known and unit.split not in unknown.setdefault(unit.method, []):
            unknown[unit.method].append(unit.split)
    unknown = {m: s for m, s in unknown.items() if s}
    jobs = max(1, min(jobs, len(plan.todo) or 1))
    seconds = replay(plan.todo, plan.waits, known, jobs) if known else None
    return Expected(seconds, sum(known.values()), jobs, len(plan.todo), len(known), unknown)


def actual_line(seconds: float, plan_expected: Expected | None) -> str:
    """One line for the end of the sweep: the measured wall time, beside what was expected."""
    text = f"actual wall time: {duration(seconds)} ({seconds:.1f} s)"
    if plan_expected is not None and plan_expected.seconds is not None:
        text += f"; expected {duration(plan_expected.seconds)}"
        if plan_expected.unknown:
            text += " for the units with an earlier record"
    return text


def append_clock(logs: Path, plan: Plan, executor: str, started: float, seconds: float,
                 plan_expected: Expected | None, counts: Mapping[str, int]) -> Path:
    """Add one JSON line for this sweep to ``<logs>/sweeps.jsonl`` (when, where, how many, expected and actual)."""
    path = Path(logs) / CLOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "dataset": plan.dataset, "fingerprint": plan.fingerprint, "executor": executor,
        "units": plan.total, "to_run": len(plan.todo), "counts": dict(counts),
        "expected": None if plan_expected is None else asdict(plan_expected), "actual_s": round(seconds, 3)}
    with path.open("a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


__all__ = ["CLOCK_FILE", "Expected", "actual_line", "append_clock", "duration", "expected", "replay"]
