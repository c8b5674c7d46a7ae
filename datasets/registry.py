"""Dataset registry: ``@register_dataset(name)`` on a loader ``f(**options) -> Dataset`` registers it.

The built-in datasets (``synthetic``, ``jump``) register when their modules are
imported; datasets of other installed packages register through the entry-point group
``platebench.datasets`` (found by :mod:`benchmark.plugins`) and the same
:func:`register_dataset`. A duplicate name is an error that names both places. The
lookups (:func:`benchmark.datasets.load_dataset`, ``bench data info``) live in
:mod:`benchmark.datasets`, which imports the built-ins and the plugins first.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from .. import plugins
from ..errors import BenchError

if TYPE_CHECKING:
    from .dataset import Dataset

Loader = Callable[..., "Dataset"]
BUILTIN = "platebench"
"""Origin of the datasets shipped in ``datasets/``."""


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader, where it comes from and a one-line description."""

    name: str
    loader: Loader
    origin: str
    description: str

    @property
    def where(self) -> str:
        """``module.function`` of the loader."""
        return f"{self.loader.__module__}.{self.loader.__qualname__}"


_DATASETS: dict[str, DatasetEntry] = {}


def _first_line(loader: Loader) -> str:
    doc = (loader.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _origin_of(loader: Loader) -> str:
    """The plugin's distribution while loading one, ``platebench`` for built-ins, else the top-level module."""
    loading = plugins.loading_origin()
    if loading is not None:
        return loading
    top = loader.__module__.split(".", 1)[0]
    return BUILTIN if top == "benchmark" else top


def add_dataset(name: str, loader: Loader, description: str | None = None, origin: str | None = None) -> Loader:
    """Register ``loader`` under ``name`` (the function form of :func:`register_dataset`).

    ``description`` defaults to the first line of the loader's docstring; ``origin`` (shown by
    ``bench data info``) to ``platebench`` for the built-ins and to the plugin's distribution.
    """
    if not callable(loader):
        raise BenchError(f"dataset '{name}': the loader must be a function returning a Dataset, got {loader!r}")
    entry = DatasetEntry(name, loader, origin or _origin_of(loader),
                         description if description is not None else _first_line(loader))
    existing = _DATASETS.get(name)
    if existing is not None and existing.loader is not loader:
        raise BenchError(f"dataset name '{name}' is registered twice: by {existing.where} ({existing.origin}) "
                         f"and by {entry.where} ({entry.origin}); rename one")
    _DATASETS[name] = entry
    return loader


def register_dataset(name: str, description: str | None = None) -> Callable[[Loader], Loader]:
    """Decorator: register a loader ``f(**options) -> Dataset`` under ``name``.

    Parameters
    ----------
    name
        The name ``bench run --dataset`` and :func:`benchmark.datasets.load_dataset` take.
    description
        One line shown by ``bench data info`` (default: the first line of the loader's docstring).
    """

    def deco(loader: Loader) -> Loader:
        return add_dataset(name, loader, description)

    return deco


def unregister_dataset(name: str) -> None:
    """Remove ``name`` from the registry (used to roll back a plugin that failed half-way)."""
    _DATASETS.pop(name, None)


def registered_datasets() -> dict[str, DatasetEntry]:
    """The datasets registered so far, by name (no loading: see :func:`benchmark.datasets.available_datasets`)."""
    return dict(sorted(_DATASETS.items()))


def _load_entry_point(entry_point: metadata.EntryPoint) -> list[str]:
    """Load one ``platebench.datasets`` entry point and register what it names; return the names it added.

    The entry point names a module whose import registers datasets, or a loader function
    (registered under the entry point's name unless it registered itself).

    Raises
    ------
    Exception
        Whatever the import or the registration raised; names it had registered are removed.
    """
    before = set(_DATASETS)
    try:
        obj = entry_point.load()
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        if not isinstance(obj, types.ModuleType):
            if not callable(obj):
                raise TypeError(f"it names {type(obj).__name__} {obj!r}, not a module or a loader function")
            if not any(e.loader is obj for e in _DATASETS.values()):
                add_dataset(entry_point.name, obj)
        added = sorted(set(_DATASETS) - before)
        if not added:  # imported earlier (e.g. by a test): its datasets are registered already
            added = sorted(n for n, e in _DATASETS.items() if e.loader.__module__ == module
                           and (isinstance(obj, types.ModuleType) or e.loader is obj))
            for name in added:
                _DATASETS[name] = DatasetEntry(name, _DATASETS[name].loader, plugins.package_of(entry_point),
                                               _DATASETS[name].description)
        if not added:
            raise TypeError("it registers no dataset (decorate the loader with @register_dataset(\"name\"), or "
                            "point the entry point at the loader: 'module:function')")
        return added
    except BaseException:
        for name in set(_DATASETS) - before:
            unregister_dataset(name)
        raise


def load_plugins(found: Iterable[metadata.EntryPoint] | None = None) -> list[plugins.PluginProblem]:
    """Load every ``platebench.datasets`` entry point (``found``: those installed); return this call's problems."""
    return plugins.load_entry_points(plugins.DATASETS_GROUP, _load_entry_point, found)
