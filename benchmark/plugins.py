"""Methods from other installed packages: the entry-point group ``platebench.methods``.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."platebench.methods"]
    my_method = "my_package.my_method"          # a module whose import registers methods
    # or: my_method = "my_package.my_method:MyMethod"   (a Method subclass)

Every entry point is loaded once, after the built-in methods, through the same
:func:`benchmark.registry.register_method` path. A broken plugin (import error,
duplicate name, wrong signature, an object that is not a method) is recorded as a
:class:`PluginProblem` naming its package and skipped; it never breaks ``bench``
for the other methods.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

from . import registry

GROUP = "platebench.methods"
"""The entry-point group a plugin package declares its methods in."""

_problems: list[PluginProblem] = []


@dataclass(frozen=True)
class PluginProblem:
    """A plugin entry point that could not be loaded, and why."""

    package: str
    entry_point: str
    reason: str

    def __str__(self) -> str:
        return f"plugin package '{self.package}' (entry point {self.entry_point}): {self.reason}; skipped"


def package_of(entry_point: metadata.EntryPoint) -> str:
    """The distribution that declares ``entry_point`` (its top-level module if unknown)."""
    dist = getattr(entry_point, "dist", None)
    if dist is not None and dist.metadata is not None and dist.metadata["Name"]:
        return dist.metadata["Name"]
    return entry_point.value.split(":", 1)[0].split(".", 1)[0]


def entry_points(group: str = GROUP) -> list[metadata.EntryPoint]:
    """The installed entry points of ``group``, sorted by package and name (a stable load order)."""
    return sorted(metadata.entry_points(group=group), key=lambda ep: (package_of(ep), ep.name))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_entry_point(entry_point: metadata.EntryPoint) -> list[str]:
    """Load one entry point and register what it names; return the method names it added.

    Raises
    ------
    Exception
        Whatever the import or the registration raised; names it had registered are removed.
    """
    package = package_of(entry_point)
    before = set(registry._METHODS)
    registry._loading_origin.append(package)
    try:
        obj = entry_point.load()
        from .methods.base import Method

        if inspect.isclass(obj) and issubclass(obj, Method):
            registry.register_method(obj)
        elif not isinstance(obj, types.ModuleType):
            raise TypeError(f"it names {type(obj).__name__} {obj!r}, not a module or a Method subclass")
        added = sorted(set(registry._METHODS) - before)
        if not added:  # imported earlier (e.g. by a test): its methods are registered already
            module = obj.__name__ if isinstance(obj, types.ModuleType) else obj.__module__
            added = sorted(n for n, c in registry._METHODS.items()
                           if c.__module__ == module and (c is obj or isinstance(obj, types.ModuleType)))
            for name in added:
                registry._ORIGINS[name] = package
        if not added:
            raise TypeError("it registers no method (decorate the class with @register_method, or point "
                            "the entry point at the class: 'module:Class')")
        return added
    except BaseException:
        for name in set(registry._METHODS) - before:
            registry.unregister_method(name)
        raise
    finally:
        registry._loading_origin.pop()


def load_plugins(found: Iterable[metadata.EntryPoint] | None = None) -> list[PluginProblem]:
    """Load every plugin entry point (``found``: those installed); return the problems of this call.

    Problems are also kept for :func:`plugin_problems` (``bench methods list`` prints them).
    """
    problems = []
    for ep in entry_points() if found is None else found:
        try:
            load_entry_point(ep)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never break bench
            problems.append(PluginProblem(package_of(ep), f"'{ep.name} = {ep.value}'", _one_line(exc)))
    _problems.extend(problems)
    return problems


def plugin_problems() -> list[PluginProblem]:
    """The plugins that failed to load in this process."""
    return list(_problems)
