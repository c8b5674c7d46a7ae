"""source_digest: the code part of the cache keys changes with a hashed source file or a parameter, and only then."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmark.source_digest import source_digest, source_files

PACKAGE = "pb_digest_probe"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary package ``pb_digest_probe`` (modules ``a``, ``b``, ``sub.c``) on ``sys.path``, not imported."""
    root = tmp_path / PACKAGE
    (root / "sub").mkdir(parents=True)
    for path, text in {"__init__.py": "", "a.py": "A = 1\n", "b.py": "B = 2\n", "sub/__init__.py": "",
                       "sub/c.py": "C = 3\n"}.items():
        (root / path).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]  # find_spec of a submodule imports its package


def test_the_digest_is_the_documented_byte_stream(package):
    params = {"b": 2, "a": [1, "x"]}
    expected = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for name, file in ((f"{PACKAGE}.a", "a.py"), (f"{PACKAGE}.b", "b.py")):
        expected.update(name.encode() + b"\0" + (package / file).read_bytes() + b"\0")
    assert source_digest([f"{PACKAGE}.a", f"{PACKAGE}.b"], params) == expected.hexdigest()
    text = hashlib.sha256(b"torch 1 numpy 2" + f"{PACKAGE}.a/a.py".encode() + b"\0A = 1\n\0").hexdigest()
    assert source_digest([f"{PACKAGE}.a"], "torch 1 numpy 2", file_labels=True) == text


def test_a_package_counts_every_module_below_its_folder(package):
    assert [label for label, _ in source_files(PACKAGE)] == [
        f"{PACKAGE}/{p}" for p in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py")]
    assert source_files(f"{PACKAGE}.a") == [(f"{PACKAGE}.a", package / "a.py")]
    assert source_files(f"{PACKAGE}.a", file_labels=True) == [(f"{PACKAGE}.a/a.py", package / "a.py")]
    assert source_digest([PACKAGE], file_labels=True) == source_digest([PACKAGE])  # labels of a package's files


def test_it_changes_with_a_hashed_source_file_and_only_then(package):
    modules = [f"{PACKAGE}.a", f"{PACKAGE}.sub"]
    before = source_digest(modules, {"x": 1})
    assert source_digest(modules, {"x": 1}) == before
    (package / "b.py").write_text("B = 20\n")  # not hashed
    assert source_digest(modules, {"x": 1}) == before
    (package / "a.py").write_text("A = 10\n")
    edited = source_digest(modules, {"x": 1})
    assert edited != before
    (package / "sub" / "c.py").write_text("C = 30\n")  # a module of a hashed package
    assert source_digest(modules, {"x": 1}) not in (before, edited)
    nested = source_digest(modules, {"x": 1})
    (package / "sub" / "d.py").write_text("")  # a new module of a hashed package counts from the start
    assert source_digest(modules, {"x": 1}) != nested


def test_it_changes_with_a_parameter_and_only_then(package):
    modules = [f"{PACKAGE}.a"]
    before = source_digest(modules, {"sigma": 1.0, "features": ["nuclei"]})
    assert source_digest(modules, {"features": ["nuclei"], "sigma": 1.0}) == before  # key order is not a parameter
    assert source_digest(modules, {"sigma": 2.0, "features": ["nuclei"]}) != before
    assert source_digest(modules, {"sigma": 1.0, "features": ["nuclei", "RNA_area"]}) != before
    assert source_digest(modules, "torch 2.5 numpy 2.1") != source_digest(modules, "torch 2.6 numpy 2.1")


def test_a_module_without_a_source_file_is_an_error_naming_it(package):
    with pytest.raises(RuntimeError, match=f"{PACKAGE}.missing"):
        source_digest([f"{PACKAGE}.missing"])
