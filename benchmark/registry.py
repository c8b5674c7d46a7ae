"""Method registry: ``@register_method`` on a class registers it under its ``name``.

The registry owns the table of methods and the lookups. Built-in methods are the
public modules of ``benchmark.methods`` (imported on the first lookup, each
registers itself); entry-point plugins (group ``platebench.methods``) are found by
:mod:`benchmark.plugins` and go through the same :func:`register_method`. A
duplicate name is an error that names both places.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from collections.abc import Iterable
from importlib import metadata
from typing import TYPE_CHECKING

from . import plugins
from .errors import BenchError, UnknownNameError

if TYPE_CHECKING:  # imported where used, so importing the registry loads neither numpy nor polars
    from .methods.base import Method

_METHODS: dict[str, type[Method]] = {}
_ORIGINS: dict[str, str] = {}
BUILTIN = "platebench"
"""Origin of the methods shipped in ``methods/``."""
_plugins_loaded = False

# (method, positional parameters after self) of the adapter API; extra parameters need defaults
API_SIGNATURES: dict[str, tuple[str, ...]] = {"fit": ("train", "val", "seed"), "adapt": ("plate",),
                                              "predict": ("images",)}


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def signature_problems(cls: type) -> list[str]:
    """What is wrong with the signatures of ``fit``, ``adapt`` and ``predict`` of ``cls`` (empty if nothing)."""
    problems = []
    for method, params in API_SIGNATURES.items():
        func = getattr(cls, method, None)
        expected = f"{method}(self, {', '.join(params)})"
        if not callable(func):
            problems.append(f"{method} is missing; define {expected}")
            continue
        try:
            sig = inspect.signature(func)
            sig.bind(None, *params)
        except (TypeError, ValueError):
            found = f"{method}{inspect.signature(func)}" if _has_signature(func) else method
            problems.append(f"{found} does not accept the call {expected}; use that signature")
    return problems


def _has_signature(func: object) -> bool:
    try:
        inspect.signature(func)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _origin_of(cls: type) -> str:
    """``platebench`` for built-ins, the plugin's distribution while loading one, else the top-level module."""
    loading = plugins.loading_origin()
    if loading is not None:
        return loading
    top = cls.__module__.split(".", 1)[0]
    return BUILTIN if top == "benchmark" else top


def register_method(cls: type[Method], origin: str | None = None) -> type[Method]:
    """Class decorator: validate and register a method under ``cls.name``.

    ``origin`` (shown by ``bench methods list``) defaults to ``platebench`` for the
    built-in methods and to the distribution name for entry-point plugins.
    """
    from .methods.base import AccessLevel, MethodConfig

    for attr in ("name", "access", "description"):
        if not hasattr(cls, attr):
            raise BenchError(f"method class {_where(cls)} lacks the class attribute '{attr}'")
    if not isinstance(cls.access, AccessLevel):
        raise BenchError(f"{_where(cls)}.access must be an AccessLevel, got {cls.access!r}")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, MethodConfig)):
        raise BenchError(f"{_where(cls)}.Config must subclass MethodConfig")
    existing = _METHODS.get(cls.name)
    if existing is not None and existing is not cls:
        raise BenchError(f"method name '{cls.name}' is registered twice: by {_where(existing)} "
                         f"and by {_where(cls)}; rename one")
    if inspect.isabstract(cls):
        raise BenchError(f"method {_where(cls)} does not implement "
                         f"{', '.join(sorted(cls.__abstractmethods__))}")
    problems = signature_problems(cls)
    if problems:
        raise BenchError(f"method {_where(cls)} has wrong signatures: {'; '.join(problems)}")
    _METHODS[cls.name] = cls
    _ORIGINS[cls.name] = origin or _origin_of(cls)
    return cls


def unregister_method(name: str) -> None:
    """Remove ``name`` from the registry (used to roll back a plugin that failed half-way)."""
    _METHODS.pop(name, None)
    _ORIGINS.pop(name, None)


def _load_builtins() -> None:
    """Import every public module of ``benchmark.methods``; each registers its method."""
    from . import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{methods.__name__}.{info.name}")


def _load_entry_point(entry_point: metadata.EntryPoint) -> list[str]:
    """Load one ``platebench.methods`` entry point and register what it names; return the names it added.

    Raises
    ------
    Exception
        Whatever the import or the registration raised; names it had registered are removed.
    """
    from .methods.base import Method

    before = set(_METHODS)
    try:
        obj = entry_point.load()
        if inspect.isclass(obj) and issubclass(obj, Method):
            register_method(obj)
        elif not isinstance(obj, types.ModuleType):
            raise TypeError(f"it names {type(obj).__name__} {obj!r}, not a module or a Method subclass")
        added = sorted(set(_METHODS) - before)
        if not added:  # imported earlier (e.g. by a test): its methods are registered already
            module = obj.__name__ if isinstance(obj, types.ModuleType) else obj.__module__
            added = sorted(n for n, c in _METHODS.items()
                           if c.__module__ == module and (c is obj or isinstance(obj, types.ModuleType)))
            for name in added:
                _ORIGINS[name] = plugins.package_of(entry_point)
        if not added:
            raise TypeError("it registers no method (decorate the class with @register_method, or point "
                            "the entry point at the class: 'module:Class')")
        return added
    except BaseException:
        for name in set(_METHODS) - before:
            unregister_method(name)
        raise


def load_plugins(found: Iterable[metadata.EntryPoint] | None = None) -> list[plugins.PluginProblem]:
    """Load every ``platebench.methods`` entry point (``found``: those installed); return this call's problems.

    Problems are also kept for :func:`benchmark.plugins.plugin_problems` (``bench methods list``
    prints them).
    """
    return plugins.load_entry_points(plugins.METHODS_GROUP, _load_entry_point, found)


def _load_all() -> None:
    """The built-in methods, then (once per process) the entry-point plugins."""
    global _plugins_loaded
    _load_builtins()
    if not _plugins_loaded:
        _plugins_loaded = True
        load_plugins()


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; unknown names list the valid ones."""
    _load_all()
    if name not in _METHODS:
        error = UnknownNameError("method", name, _METHODS)
        broken = plugins.plugin_problems(plugins.METHODS_GROUP)
        if broken:
            error.args = (f"{error.args[0]} ({len(broken)} plugin(s) failed to load and were skipped: "
                          f"{'; '.join(str(p) for p in broken)})",)
        raise error
    return _METHODS[name]


def available_methods() -> dict[str, type[Method]]:
    """All registered methods by name (built-ins and entry-point plugins)."""
    _load_all()
    return dict(sorted(_METHODS.items()))


def method_origin(name: str) -> str:
    """Where a method comes from: ``platebench`` or the plugin's distribution name."""
    return _ORIGINS.get(name, "?")
