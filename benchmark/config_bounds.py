"""Valid ranges of numeric hyper-parameters, declared once per config class and checked when a config is built.

A config dataclass (:class:`benchmark.methods.base.MethodConfig`) declares ``bounds``, a class
attribute mapping field names to a :class:`Bound`; a subclass adds its own fields' bounds and
inherits its parents' (:func:`declared_bounds` merges them along the class hierarchy).
``MethodConfig.__post_init__`` calls :func:`check_bounds`, so ``--set max_epochs=0`` fails
while the config is resolved, before any run starts, with a :class:`ConfigError` naming the
field, the value and the valid range (:func:`naming_method` adds the method where it is known).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import BenchError


class ConfigError(BenchError):
    """A hyper-parameter outside its valid range (or not a number where one is needed)."""


@dataclass(frozen=True)
class Bound:
    """A closed or open interval; ``None`` ends are unbounded. Values must be finite numbers."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is a finite number (not a bool) inside the interval."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"


def at_least(low: float) -> Bound:
    """``value >= low``."""
    return Bound(low=low)


def positive() -> Bound:
    """``value > 0``."""
    return Bound(low=0, low_open=True)


def between(low: float, high: float) -> Bound:
    """``low <= value <= high``."""
    return Bound(low=low, high=high)


def declared_bounds(cls: type) -> dict[str, Bound]:
    """The ``bounds`` of ``cls`` and of every base class (a subclass's declaration wins)."""
    merged: dict[str, Bound] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("bounds") or {})
    return merged


def check_bounds(config: Any) -> None:
    """Raise :class:`ConfigError` for the first field of ``config`` outside its declared bound."""
    bounds: Mapping[str, Bound] = declared_bounds(type(config))
    for name, bound in bounds.items():
        value = getattr(config, name)
        if not bound.holds(value):
            default = getattr(type(config), name, None)
            raise ConfigError(f"hyper-parameter {name}={value!r} is out of range: it must be {bound}"
                              + (f" (default {default!r})" if default is not None else ""))


@contextmanager
def naming_method(method: str) -> Iterator[None]:
    """Prefix a :class:`ConfigError` raised inside with the method's name (a config class may serve several)."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"method '{method}': {exc}") from None


__all__ = ["Bound", "ConfigError", "at_least", "between", "check_bounds", "declared_bounds", "naming_method",
           "positive"]
