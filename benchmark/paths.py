"""Where platebench keeps generated data and results."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BenchError

CACHE_ENV = "PLATEBENCH_CACHE"


def cache_dir() -> Path:
    """Root of the dataset cache: ``$PLATEBENCH_CACHE`` or ``~/.cache/platebench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "platebench"


def ensure_writable(folder: Path, what: str = "cache folder") -> Path:
    """Create ``folder`` if needed and check that files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BenchError(
            f"{what} {folder} is not writable ({exc.strerror or exc}); "
            f"set {CACHE_ENV} to a writable folder, e.g. `export {CACHE_ENV}=/tmp/platebench`"
        ) from None
    return folder
