"""Dataset adapters: the ``synthetic`` simulator (embedded default) and ``jump`` (JUMP-CP, prepared).

``load_dataset(name, **options)`` opens a dataset by name; unknown names list the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError
from .dataset import Dataset, LabelledImages, PlateView, open_dataset

_LOADERS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register a loader ``f(**options) -> Dataset`` under ``name``."""

    def deco(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _LOADERS[name] = loader
        return loader

    return deco


def _load_builtins() -> None:
    from . import jump, synthetic  # noqa: F401  (importing registers the loaders)


def dataset_names() -> list[str]:
    _load_builtins()
    return sorted(_LOADERS)


def load_dataset(name: str, **options: Any) -> Dataset:
    """Open dataset ``name`` (``synthetic`` is generated and cached on first use).

    ``name`` may also be a path to a prepared dataset folder.
    """
    _load_builtins()
    if name in _LOADERS:
        return _LOADERS[name](**options)
    if Path(name).is_dir():
        return open_dataset(Path(name))
    raise UnknownNameError("dataset", name, _LOADERS)


__all__ = ["Dataset", "LabelledImages", "PlateView", "load_dataset", "dataset_names",
           "open_dataset", "register_dataset"]
