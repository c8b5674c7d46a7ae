"""``bench methods new``: write the skeleton of a new method (method file, its test, optionally a package).

The skeleton registers itself, declares its access level and a typed config, and leaves
the three calls (``fit``, ``adapt``, ``predict``) to fill in; once they are, it passes
``bench methods check NAME``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from ..errors import BenchError
from ._skeleton import METHOD, PYPROJECT, TEST

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def class_name(name: str) -> str:
    """``my_method`` -> ``MyMethod``."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def check_name(name: str) -> None:
    """Raise :class:`BenchError` unless ``name`` can be a method name and a Python module name."""
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise BenchError(f"'{name}' cannot be a method name: use lower case letters, digits and underscores, "
                         "starting with a letter (e.g. my_method)")


def write_skeleton(name: str, directory: Path, plugin: bool = False, test_directory: Path | None = None) -> list[Path]:
    """Write ``<directory>/<name>.py`` and ``<test_directory>/test_<name>.py`` (default: next to the method;
    with ``plugin`` also a ``pyproject.toml``).

    Existing files are never overwritten (:class:`BenchError` names them).
    """
    check_name(name)
    directory = Path(directory)
    tests = Path(test_directory) if test_directory is not None else directory
    values = {"name": name, "cls": class_name(name), "package": f"platebench-{name.replace('_', '-')}"}
    files = {directory / f"{name}.py": METHOD, tests / f"test_{name}.py": TEST}
    if plugin:
        files[directory / "pyproject.toml"] = PYPROJECT
    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise BenchError(f"{', '.join(existing)} already exist(s); choose another --dir or name, or remove them")
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return list(files)
