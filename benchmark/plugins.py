"""Entry-point plugins: methods and datasets from other installed packages.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."platebench.methods"]
    my_method = "my_package.my_method"          # a module whose import registers the method my_method
    # or: my_method = "my_package.my_method:MyMethod"   (a Method subclass whose name is "my_method")

    [project.entry-points."platebench.datasets"]
    my_screen = "my_package.my_screen"          # a module whose import registers datasets
    # or: my_screen = "my_package.my_screen:load_my_screen"   (a loader function)

A method entry point's *name* is the method's name: ``bench`` lists plugin methods from
the installed distributions' metadata alone and imports a plugin's code only inside a
sealed worker (:mod:`benchmark.registry`), which checks that the class it finds is named
so. Dataset plugins are still imported where they are used.

This module only finds and loads entry points; it knows nothing of methods or datasets.
Each registry (:mod:`benchmark.registry`, :mod:`benchmark.datasets.registry`) passes
the function that registers what one entry point names. A broken plugin (import
error, duplicate name, wrong signature, an object that is not a method or a loader)
is recorded as a :class:`PluginProblem` naming its package and skipped; it never
breaks ``bench`` for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata

METHODS_GROUP = "platebench.methods"
"""The entry-point group a plugin package declares its methods in."""
DATASETS_GROUP = "platebench.datasets"
"""The entry-point group a plugin package declares its datasets in."""
GROUP = METHODS_GROUP
"""The method group (the name older code and plugins' tests use)."""

_problems: list[PluginProblem] = []
_loading: list[str] = []  # the distribution whose entry point is being loaded (innermost last)


@dataclass(frozen=True)
class PluginProblem:
    """A plugin entry point that could not be loaded, and why."""

    package: str
    entry_point: str
    reason: str
    group: str = METHODS_GROUP

    def __str__(self) -> str:
        return f"plugin package '{self.package}' (entry point {self.entry_point}): {self.reason}; skipped"


def package_of(entry_point: metadata.EntryPoint) -> str:
    """The distribution that declares ``entry_point`` (its top-level module if unknown)."""
    dist = getattr(entry_point, "dist", None)
    if dist is not None and dist.metadata is not None and dist.metadata["Name"]:
        return dist.metadata["Name"]
    return entry_point.value.split(":", 1)[0].split(".", 1)[0]


def summary_of(entry_point: metadata.EntryPoint) -> str:
    """The one-line ``Summary`` (pyproject ``description``) of ``entry_point``'s distribution; "" if none."""
    dist = getattr(entry_point, "dist", None)
    meta = dist.metadata if dist is not None else None
    text = (meta["Summary"] if meta is not None else None) or ""
    return " ".join(str(text).split())


def module_of(entry_point: metadata.EntryPoint) -> str:
    """The module an entry point names (``"pkg.mod"`` of ``"pkg.mod:Class"``), read from metadata, not imported."""
    return entry_point.value.split(":", 1)[0].strip()


def entry_points(group: str = METHODS_GROUP) -> list[metadata.EntryPoint]:
    """The installed entry points of ``group``, sorted by package and name (a stable load order)."""
    return sorted(metadata.entry_points(group=group), key=lambda ep: (package_of(ep), ep.name))


def loading_origin() -> str | None:
    """The distribution whose entry point is being loaded right now, or None outside plugin loading.

    Registries use it as the origin of what registers meanwhile.
    """
    return _loading[-1] if _loading else None


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def loading(entry_point: metadata.EntryPoint) -> Iterator[str]:
    """While inside, :func:`loading_origin` names ``entry_point``'s distribution (yielded)."""
    package = package_of(entry_point)
    _loading.append(package)
    try:
        yield package
    finally:
        _loading.pop()


def load_entry_points(group: str, load_one: Callable[[metadata.EntryPoint], object],
                      found: Iterable[metadata.EntryPoint] | None = None) -> list[PluginProblem]:
    """Call ``load_one`` on every entry point of ``group`` (``found``: those installed); return the problems.

    While ``load_one`` runs, :func:`loading_origin` names the entry point's distribution.
    An exception from ``load_one`` becomes a :class:`PluginProblem` (also kept for
    :func:`plugin_problems`); the next entry point is loaded regardless.
    """
    problems = []
    for ep in entry_points(group) if found is None else found:
        try:
            with loading(ep):
                load_one(ep)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never break bench
            problems.append(PluginProblem(package_of(ep), f"'{ep.name} = {ep.value}'", one_line(exc), group))
    _problems.extend(problems)
    return problems


def plugin_problems(group: str | None = METHODS_GROUP) -> list[PluginProblem]:
    """The plugins of ``group`` (every group with None) that failed to load in this process."""
    return [p for p in _problems if group is None or p.group == group]
