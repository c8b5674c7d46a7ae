"""Method registry: ``@register_method`` on a class registers it under its ``name``.

The registry owns the table of methods and the lookups. Three kinds of method:

- **built-in**: the public modules of ``benchmark.methods`` (reviewed code of this repository),
  imported on the first lookup; each registers itself.
- **local**: a class some code of this process imported and registered itself (a test module, a
  script, a plugin's own test importing its module); it has run here already.
- **plugin**: an entry point of group ``platebench.methods`` of another installed distribution
  (:mod:`benchmark.plugins`). Its code is untrusted: this process lists it from the entry-point
  *metadata* alone and never imports it. The entry point's **name is the method's name**
  (``my_method = "pkg.mod"`` or ``my_method = "pkg.mod:MyMethod"``). Only a sealed worker imports
  it, through :func:`load_plugin_method` (or ``get_method(name, import_plugins=True)``), which loads
  that one entry point and fails with a clear message when the class it finds is named otherwise.

:func:`get_method` returns built-in and local classes; for a plugin it raises
:class:`PluginSealedError`. :func:`method_entries` (and :func:`method_names`,
:func:`method_origin`) list all three kinds without importing any plugin; what a plugin
declares (access level, description, config) comes from a worker: :mod:`benchmark.method_info`.
A duplicate name is an error that names both places; a plugin entry point that takes a
built-in's or a local method's name, or that another plugin declares too, is skipped and
reported (:func:`plugin_problems`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
import types
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from . import plugins
from .errors import BenchError, UnknownNameError

if TYPE_CHECKING:  # imported where used, so importing the registry loads neither numpy nor polars
    from collections.abc import Iterator

    from .methods.base import Method

_METHODS: dict[str, type[Method]] = {}
_ORIGINS: dict[str, str] = {}
BUILTIN = "platebench"
"""Origin of the methods shipped in ``methods/``."""
BUILTIN_MODULE = "benchmark.methods."
"""Module prefix of the built-in methods."""
KINDS = ("builtin", "local", "plugin")

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


@contextlib.contextmanager
def registered(*classes: type[Method]) -> Iterator[None]:
    """Register ``classes`` for the ``with`` block only; afterwards each name holds what it held before (tests)."""
    names = [cls.name for cls in classes]
    before = {name: (_METHODS[name], _ORIGINS.get(name, "?")) for name in names if name in _METHODS}
    try:
        for cls in classes:
            register_method(cls)
        yield
    finally:
        for name in names:
            unregister_method(name)
            if name in before:
                _METHODS[name], _ORIGINS[name] = before[name]


def _load_builtins() -> None:
    """Import every public module of ``benchmark.methods``; each registers its method."""
    from . import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{methods.__name__}.{info.name}")


class PluginError(BenchError):
    """A plugin method's entry point is broken: it does not import, or names no method of its own name."""


class PluginSealedError(BenchError):
    """A plugin method was asked for in a process that must never import plugins (the evaluator)."""


@dataclass(frozen=True)
class MethodEntry:
    """One method as listed without importing any plugin.

    ``kind``: ``builtin``, ``local`` or ``plugin`` (module docstring). ``origin``: ``platebench``,
    the plugin's distribution, or a local class's top-level module. ``target``: ``module.Qualname``
    of a class registered here, the entry point's value (``pkg.mod`` or ``pkg.mod:Class``) of a plugin.
    ``summary``: the plugin distribution's one-line Summary from its metadata ("" otherwise).
    """

    name: str
    kind: str
    origin: str
    target: str
    summary: str = ""

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"

    @property
    def plugin(self) -> bool:
        return self.kind == "plugin"


def kind_of(cls: type) -> str:
    """``builtin`` for a class of ``benchmark.methods``, else ``local`` (a class registered in this process)."""
    return "builtin" if cls.__module__.startswith(BUILTIN_MODULE) else "local"


def _is_own(cls: type, ep: metadata.EntryPoint) -> bool:
    """Whether the registered ``cls`` is entry point ``ep``'s method, imported here already (by a worker's
    :func:`load_plugin_method`, or by the plugin's own test importing its module)."""
    return kind_of(cls) == "local" and (cls.__module__ == plugins.module_of(ep)
                                        or _ORIGINS.get(cls.name) == plugins.package_of(ep))


def _plugin_entry_points() -> tuple[dict[str, metadata.EntryPoint], list[plugins.PluginProblem]]:
    """The usable plugin entry points by name (metadata only) and the ones skipped, with why.

    Skipped: a name of a built-in or local method (unless that class is the entry point's own, imported
    here already), and a name another distribution declared first.
    """
    found: dict[str, metadata.EntryPoint] = {}
    problems = []
    for ep in plugins.entry_points(plugins.METHODS_GROUP):
        taken = _METHODS.get(ep.name)
        if taken is not None and not _is_own(taken, ep):
            what = "the built-in method" if kind_of(taken) == "builtin" else "the method"
            why = f"the name '{ep.name}' is taken by {what} {_where(taken)}; rename the entry point and the method"
        elif ep.name in found:
            why = (f"the name '{ep.name}' is declared by the plugin package '{plugins.package_of(found[ep.name])}' "
                   "too; rename one")
        else:
            found[ep.name] = ep
            continue
        problems.append(plugins.PluginProblem(plugins.package_of(ep), f"'{ep.name} = {ep.value}'", why))
    return found, problems


def plugin_problems() -> list[plugins.PluginProblem]:
    """The plugin method entry points skipped, from metadata (nothing is imported): names taken or declared twice."""
    _load_builtins()
    return _plugin_entry_points()[1]


def method_entries() -> dict[str, MethodEntry]:
    """Every method by name, sorted: built-ins, local classes and plugins (from metadata; none is imported)."""
    _load_builtins()
    entries = {name: MethodEntry(name, kind_of(cls), _ORIGINS.get(name, "?"), _where(cls))
               for name, cls in _METHODS.items()}
    for name, ep in _plugin_entry_points()[0].items():
        entries[name] = MethodEntry(name, "plugin", plugins.package_of(ep), ep.value, plugins.summary_of(ep))
    return dict(sorted(entries.items()))


def method_names() -> list[str]:
    """Every method name (built-ins, local classes, plugins from metadata), sorted."""
    return list(method_entries())


def _unknown(name: str, entries: dict[str, MethodEntry]) -> UnknownNameError:
    error = UnknownNameError("method", name, entries)
    skipped = plugin_problems()
    if skipped:
        error.args = (f"{error.args[0]} ({len(skipped)} plugin entry point(s) were skipped: "
                      f"{'; '.join(str(p) for p in skipped)})",)
    return error


def method_entry(name: str) -> MethodEntry:
    """The listing of ``name``; an unknown name lists the valid ones (no plugin is imported)."""
    entries = method_entries()
    if name not in entries:
        raise _unknown(name, entries)
    return entries[name]


def _import_entry_point(ep: metadata.EntryPoint) -> type[Method]:
    """Import one plugin entry point and return the method it declares (named ``ep.name``); roll back on failure."""
    from .methods.base import Method

    before = set(_METHODS)
    package = plugins.package_of(ep)
    try:
        with plugins.loading(ep):
            obj = ep.load()
            if inspect.isclass(obj) and issubclass(obj, Method):
                if getattr(obj, "name", None) != ep.name:
                    raise PluginError(
                        f"its class {_where(obj)} is named {getattr(obj, 'name', None)!r}, not '{ep.name}': a "
                        f"plugin's entry point name must be its method's name; declare "
                        f"`{getattr(obj, 'name', 'NAME')} = \"{ep.value}\"` (or rename the class's name)")
                return register_method(obj)
            if not isinstance(obj, types.ModuleType):
                raise PluginError(f"it names {type(obj).__name__} {obj!r}, not a module or a Method subclass")
            cls = _METHODS.get(ep.name)
            if cls is None or cls.__module__ != obj.__name__:
                mine = sorted(n for n, c in _METHODS.items() if c.__module__ == obj.__name__)
                fix = (f"declare `{mine[0]} = \"{ep.value}\"`: a plugin's entry point name must be its method's name"
                       if mine else "decorate the class with @register_method, or point the entry point at the "
                       "class: 'module:Class'")
                found = f"methods {', '.join(mine)}" if mine else "no method"
                raise PluginError(f"importing {obj.__name__} registers {found}, none named '{ep.name}'; {fix}")
            _ORIGINS[ep.name] = package
            return cls
    except BaseException as exc:
        for name in set(_METHODS) - before:
            unregister_method(name)
        if isinstance(exc, Exception):
            raise PluginError(f"plugin package '{package}' (entry point '{ep.name} = {ep.value}'): "
                              f"{str(exc) if isinstance(exc, PluginError) else plugins.one_line(exc)}") from exc
        raise


def load_plugin_method(name: str) -> type[Method]:
    """Import the plugin entry point ``name`` (that one only) and return its method class. **Sealed workers only.**

    Raises :class:`PluginError` when it fails to import or names no method called ``name``, and
    :class:`~benchmark.errors.UnknownNameError` when no usable plugin entry point is called ``name``.
    """
    _load_builtins()
    found, _ = _plugin_entry_points()
    if name not in found:
        cls = _METHODS.get(name)
        if cls is not None:
            return cls
        raise _unknown(name, method_entries())
    cls = _METHODS.get(name)
    if cls is not None and _is_own(cls, found[name]):
        return cls  # imported here already
    return _import_entry_point(found[name])


def get_method(name: str, *, import_plugins: bool = False) -> type[Method]:
    """The built-in or local method class registered as ``name``; unknown names list the valid ones.

    For a plugin this raises :class:`PluginSealedError` without importing it, unless
    ``import_plugins`` (set inside a sealed worker only): then :func:`load_plugin_method`.
    """
    _load_builtins()
    cls = _METHODS.get(name)
    if cls is not None:
        return cls
    entries = method_entries()
    entry = entries.get(name)
    if entry is None:
        raise _unknown(name, entries)
    if import_plugins:
        return load_plugin_method(name)
    raise PluginSealedError(f"method '{name}' comes from the plugin package '{entry.origin}': its code runs only "
                            "inside a sealed worker (bench run, sweep, verify, methods check), never in this process")


def available_methods() -> dict[str, type[Method]]:
    """The method classes this process may import, by name: built-ins and local classes, never plugins
    (:func:`method_entries` lists those too)."""
    _load_builtins()
    return dict(sorted(_METHODS.items()))


def method_origin(name: str) -> str:
    """Where a method comes from: ``platebench``, the plugin's distribution, a local class's module (``?``: unknown)."""
    entry = method_entries().get(name)
    return entry.origin if entry is not None else _ORIGINS.get(name, "?")
