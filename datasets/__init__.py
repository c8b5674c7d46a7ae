"""Datasets: the ``synthetic`` simulator (embedded default), ``jump`` (JUMP-CP, prepared) and plugins.

``load_dataset(name, **options)`` opens a dataset by name (or a prepared folder by path);
unknown names list the valid ones. Datasets of other installed packages register through
the entry-point group ``platebench.datasets`` (:mod:`benchmark.datasets.registry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plugins
from ..errors import UnknownNameError
from . import registry
from .dataset import Dataset, LabelledImages, PlateView, open_dataset
from .registry import DatasetEntry, register_dataset

_plugins_loaded = False


def _load_builtins() -> None:
    from . import jump, synthetic  # noqa: F401  (importing registers the loaders)


def _load_all() -> None:
    """The built-in datasets, then (once per process) every entry-point plugin."""
    global _plugins_loaded
    _load_builtins()
    if not _plugins_loaded:
        _plugins_loaded = True
        registry.load_plugins()


def _load_named(name: str) -> None:
    """Only the dataset plugins whose entry point is called ``name`` (the rest stay unimported)."""
    named = [ep for ep in plugins.entry_points(plugins.DATASETS_GROUP) if ep.name == name]
    if named:
        registry.load_plugins(named)


def available_datasets() -> dict[str, DatasetEntry]:
    """Every registered dataset by name (built-ins and entry-point plugins)."""
    _load_all()
    return registry.registered_datasets()


def dataset_names() -> list[str]:
    """Names of the registered datasets."""
    return list(available_datasets())


def load_dataset(name: str, **options: Any) -> Dataset:
    """Open dataset ``name`` (``synthetic`` is generated and cached on first use).

    ``name`` may also be a path to a prepared dataset folder. A plugin's code is imported only when its dataset
    is asked for: a built-in dataset or a folder imports no plugin (a method's package may declare a dataset
    entry point too, and the evaluator must not run it: docs/sealed.md); then the entry point called ``name``,
    and only if none is, every dataset plugin.
    """
    _load_builtins()
    datasets = registry.registered_datasets()
    if name not in datasets and not Path(name).is_dir():
        _load_named(name)
        datasets = registry.registered_datasets()
        if name not in datasets:
            datasets = available_datasets()
    if name in datasets:
        return datasets[name].loader(**options)
    if Path(name).is_dir():
        return open_dataset(Path(name))
    error = UnknownNameError("dataset", name, datasets)
    broken = plugins.plugin_problems(plugins.DATASETS_GROUP)
    if broken:
        error.args = (f"{error.args[0]} ({len(broken)} dataset plugin(s) failed to load and were skipped: "
                      f"{'; '.join(str(p) for p in broken)})",)
    raise error


__all__ = ["Dataset", "DatasetEntry", "LabelledImages", "PlateView", "available_datasets", "dataset_names",
           "load_dataset", "open_dataset", "register_dataset"]
