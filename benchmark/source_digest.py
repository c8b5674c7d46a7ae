"""The code part of a cache key: a SHA-256 of parameters and of the source files of named modules and packages.

A cache (embeddings, trained models) must miss when the code that made an entry changes. Its key
holds :func:`source_digest` over the modules that shape the entry: modules are found by name
without being imported (:func:`importlib.util.find_spec`: no import cycle, nothing runs), a module
counts with its file, and a package with every ``.py`` file below its folder, so a module added to
the package counts from the start.

A loose shared module, so that every layer of :mod:`benchmark.core` can use it; it lies outside the
packages whose source the digests hash (editing it changes no digest unless it changes how they
are computed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def source_files(name: str, file_labels: bool = False) -> list[tuple[str, Path]]:
    """The source files of module or package ``name``, each with the label it is hashed under.

    A package's files (``__init__.py`` and every ``.py`` below its folder, sorted) are labelled
    ``<name>/<path below the folder>``; a module's one file ``<name>``, or ``<name>/<file name>``
    with ``file_labels``.
    """
    spec = importlib.util.find_spec(name)  # looked up at call time: a test may redirect it
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the source file of {name} for a source digest; is it spelled right "
                           "and installed?")
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        return [(f"{name}/{path.relative_to(origin.parent).as_posix()}", path)
                for path in sorted(origin.parent.rglob("*.py"))]
    return [(f"{name}/{origin.name}" if file_labels else name, origin)]


def source_digest(modules: Iterable[str], params: Mapping[str, Any] | str = "", *,
                  file_labels: bool = False) -> str:
    """SHA-256 (hex) of ``params`` and of the source of ``modules``, in the order given.

    Parameters
    ----------
    modules
        Dotted names of modules or packages (see :func:`source_files`).
    params
        What else shapes the result (settings, library versions): a mapping is hashed as its JSON
        with sorted keys, a string as it is.
    file_labels
        Label a module's file ``<name>/<file name>`` rather than ``<name>``, as the files of a
        package are (the model cache's digest hashes them so).

    Returns
    -------
    str
        The hex digest of ``params``, then ``label NUL source NUL`` for every file.
    """
    text = params if isinstance(params, str) else json.dumps(params, sort_keys=True)
    sha = hashlib.sha256(text.encode())
    for name in modules:
        for label, path in source_files(name, file_labels):
            sha.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()
