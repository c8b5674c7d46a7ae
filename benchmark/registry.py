"""Method registry: ``@register_method`` on a class registers it under its ``name``.

Entry-point plugins (group ``platebench.methods``) go through the same path. A
duplicate name is an error that names both places.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from .errors import BenchError, UnknownNameError

if TYPE_CHECKING:  # imported lazily below: benchmark.methods imports this module to register
    from .methods.base import Method

_METHODS: dict[str, type[Method]] = {}
_ORIGINS: dict[str, str] = {}


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_method(cls: type[Method], origin: str = "platebench") -> type[Method]:
    """Class decorator: validate and register a method under ``cls.name``."""
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
    _METHODS[cls.name] = cls
    _ORIGINS[cls.name] = origin
    return cls


def _load_builtins() -> None:
    """Import every public module of ``benchmark.methods``; each registers its method."""
    import importlib
    import pkgutil

    from . import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{methods.__name__}.{info.name}")


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; unknown names list the valid ones."""
    _load_builtins()
    if name not in _METHODS:
        raise UnknownNameError("method", name, _METHODS)
    return _METHODS[name]


def available_methods() -> dict[str, type[Method]]:
    """All registered methods by name."""
    _load_builtins()
    return dict(sorted(_METHODS.items()))


def method_origin(name: str) -> str:
    """Where a method comes from: ``platebench`` or the plugin's distribution name."""
    return _ORIGINS.get(name, "?")
