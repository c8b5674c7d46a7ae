"""Make a package look installed for a test: its modules and a ``.dist-info`` with entry points, on sys.path."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def install(site: Path, package: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """Write ``modules`` (name -> source) and a ``<package>.dist-info`` declaring ``entry_points``
    (group -> name -> value) into ``site``, and put ``site`` first on ``sys.path`` (the caller restores it)."""
    site.mkdir(parents=True, exist_ok=True)
    for name, code in modules.items():
        (site / f"{name}.py").write_text(code)
    info = site / f"{package.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()))
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
