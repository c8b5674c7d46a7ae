"""Check a folder that a command will write into, before it does any work (and without creating anything)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BenchError


def check_output_folder(folder: Path | str, option: str = "--results") -> None:
    """Raise :class:`BenchError` unless ``folder`` is, or can be created as, a writable folder.

    ``folder`` itself or the nearest part of its path that exists must be a folder (not a regular
    file) that this process may write into. Nothing is created: a command that fails here has
    started nothing and written nothing.
    """
    folder = Path(folder)
    path = folder
    while True:
        if path.exists() or path.is_symlink():
            break
        if path.parent == path:
            return
        path = path.parent
    if not path.is_dir():
        what = "it" if path == folder else f"its parent {path.as_posix()}"
        kind = "a file, not a folder" if path.is_file() else "not a folder"
        raise BenchError(f"{option} {folder.as_posix()}: {what} is {kind}; give a folder path (it is created "
                         "if missing); nothing was run")
    if not os.access(path, os.W_OK | os.X_OK):
        where = "" if path == folder else f" (its nearest existing parent {path.as_posix()})"
        raise BenchError(f"{option} {folder.as_posix()}{where} is not writable; give a folder you may write into")


__all__ = ["check_output_folder"]
