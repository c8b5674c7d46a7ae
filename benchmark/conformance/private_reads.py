"""Which private attributes of the data objects a method reads: the diagnosis behind a failed ``sealed`` check.

In process, ``train._dataset`` leads to the whole dataset and ``ImageArray._store`` /
``_offsets`` to the store's layout; in a sealed worker those objects hold only the fold's
training data, so a method that used them predicts differently there. :func:`watching`
records, while it is active, every read of a private attribute (one leading underscore)
of those classes made by code outside platebench itself, so the check can name the path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..datasets.dataset import Dataset, LabelledImages
from ..datasets.store import ImageArray, PackedStore

WATCHED: tuple[type, ...] = (LabelledImages, ImageArray, Dataset, PackedStore)
"""The classes whose private attributes lead from a method's arguments to labels or the store layout."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@contextmanager
def watching(classes: tuple[type, ...] = WATCHED) -> Iterator[list[str]]:
    """Inside: reads of ``Class._name`` from code outside the ``benchmark`` package are appended
    (``"LabelledImages._dataset"``, once each, in order) to the yielded list."""
    seen: list[str] = []
    originals = {cls: cls.__dict__.get("__getattribute__") for cls in classes}

    def patched(cls: type) -> Any:
        base = cls.__getattribute__

        def __getattribute__(self: Any, name: str) -> Any:  # noqa: N807
            if _is_private(name):
                caller = sys._getframe(1).f_globals.get("__name__", "")
                what = f"{type(self).__name__}.{name}"
                if caller != "benchmark" and not caller.startswith("benchmark.") and what not in seen:
                    seen.append(what)
            return base(self, name)
        return __getattribute__

    try:
        for cls in classes:
            cls.__getattribute__ = patched(cls)  # type: ignore[method-assign]
        yield seen
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = original  # type: ignore[method-assign]
