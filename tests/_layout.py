"""The repository's layout as pyproject.toml declares it: which folder installs as which package."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository (the folder holding pyproject.toml)."""


def package_dirs() -> dict[str, Path]:
    """Import name -> folder of every root package (``benchmark.methods`` -> ``methods/``), from ``package-dir``."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def source_files() -> dict[str, Path]:
    """Every file the package is made of, by its path inside an installed ``site-packages``
    (``benchmark/methods/erm.py`` for ``methods/erm.py``); caches and hidden files left out."""
    found = {}
    for package, folder in package_dirs().items():
        for file in sorted(folder.rglob("*")):
            rel = file.relative_to(folder)
            if file.is_file() and "__pycache__" not in rel.parts and not any(p.startswith(".") for p in rel.parts):
                found[Path(*package.split("."), rel).as_posix()] = file
    return found
