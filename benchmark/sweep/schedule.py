"""Which unit runs next: longest first, and never before the unit it waits for.

The order is longest-processing-time-first on the critical path: a unit's priority is its own
expected run time plus the longest chain of units waiting for it, so ERM of a (split, fold, seed)
starts early enough for AdaBN, TENT, DeYO and ROID of the same fold and seed, which load its cached
model. Units without an expected time count as long as the longest known one (1 s when none is
known), so they are not left to the end; ties keep the grid's order (the ``--methods`` order).
:class:`Schedule` hands out the next unit whose prerequisite has finished.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

U = TypeVar("U", bound=Hashable)


def priorities(units: Sequence[U], waits: Mapping[U, U], estimates: Mapping[U, float | None]) -> dict[U, float]:
    """Each unit's expected time plus the longest chain of expected times of the units that wait for it."""
    known = [t for t in estimates.values() if t is not None]
    fallback = max(known) if known else 1.0
    waiting: dict[U, list[U]] = defaultdict(list)
    for unit, before in waits.items():
        waiting[before].append(unit)
    out: dict[U, float] = {}

    def chain(unit: U) -> float:
        if unit not in out:
            own = estimates.get(unit)
            out[unit] = (fallback if own is None else own) + max((chain(w) for w in waiting[unit]), default=0.0)
        return out[unit]

    for unit in units:
        chain(unit)
    return out


def order_units(units: Sequence[U], waits: Mapping[U, U], estimates: Mapping[U, float | None]) -> list[U]:
    """``units`` by decreasing priority (:func:`priorities`), ties in their given order."""
    prio = priorities(units, waits, estimates)
    position = {u: i for i, u in enumerate(units)}
    return sorted(units, key=lambda u: (-prio[u], position[u]))


class Schedule(Generic[U]):
    """Hands out ``units`` (already in priority order) as their prerequisites finish.

    A prerequisite that is not among ``units`` (finished before the sweep started) never blocks.
    """

    def __init__(self, units: Sequence[U], waits: Mapping[U, U]):
        self._waiting = list(units)
        members = set(units)
        self._before = {u: b for u, b in waits.items() if u in members and b in members}
        self._finished: set[U] = set()

    @property
    def pending(self) -> int:
        """Units not handed out yet."""
        return len(self._waiting)

    def take(self) -> U | None:
        """The highest-priority unit whose prerequisite has finished (None when none is ready now)."""
        for i, unit in enumerate(self._waiting):
            before = self._before.get(unit)
            if before is None or before in self._finished:
                return self._waiting.pop(i)
        return None

    def finish(self, unit: U) -> None:
        """``unit`` ended (whatever its outcome: a unit waiting for it trains the model itself if it must)."""
        self._finished.add(unit)


__all__ = ["Schedule", "order_units", "priorities"]
