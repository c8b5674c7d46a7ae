"""A wheel install works: the wheel holds every module and data file, and the installed ``bench`` runs.

The wheel is built from a copy of the package's sources (no stale ``build/``), checked file
by file against ``benchmark/``, ``methods/`` and ``datasets/`` (so a sub-package missing
from pyproject's explicit ``packages`` list, or a data file no ``package-data`` pattern
covers, fails here), then installed into a fresh virtual environment whose dependencies
come from this environment's site-packages through a ``.pth`` file. Its ``bench`` runs
from outside the repository. Offline; about 25 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _layout import ROOT, package_dirs, source_files

pytestmark = pytest.mark.slow
BUILTIN_METHODS = {"erm", "adabn", "arm_bn", "cs_arm_bn", "ben", "fm_tvn"}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a clean copy of the sources (pyproject.toml, README.md and the package folders)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in package_dirs().values():
        shutil.copytree(folder, src / folder.relative_to(ROOT), ignore=shutil.ignore_patterns("__pycache__", ".*"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (whl,) = (tmp / "dist").glob("platebench-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (``--no-deps``) and this one's packages on its path."""
    env = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=env.parent)
    run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--no-deps", "--no-index",
         "-q", str(wheel)], cwd=env.parent)
    (purelib,) = (env / "lib").glob("python*/site-packages")
    # A plain path line: the project environment's own .pth files (its editable platebench) are not run.
    (purelib / "_platebench_test_deps.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return env


def test_the_wheel_holds_every_module_and_data_file(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    files = {n for n in names if ".dist-info/" not in n}
    expected = set(source_files())
    assert {p.split("/")[0] for p in files} == {"benchmark"}  # no top-level `methods` or `datasets`
    missing = sorted(expected - files)
    assert not missing, (f"not in the wheel: {missing}; add the sub-package to [tool.setuptools] packages, or the "
                         "file pattern to [tool.setuptools.package-data], in pyproject.toml")
    assert not sorted(files - expected), "the wheel holds files that are not in the sources"
    assert {"benchmark/methods/weights/platebench_ssl.safetensors", "benchmark/datasets/synthetic/DATA_CARD.md",
            "benchmark/datasets/jump/DATA_CARD.md"} <= files
    assert "bench = benchmark.cli:app" in entry_points


def test_the_installed_bench_runs_outside_the_repository(venv, toy_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PLATEBENCH_CACHE"] = str(tmp_path / "cache")
    bench = str(venv / "bin" / "bench")
    where = run([str(venv / "bin" / "python"), "-c",
                 "import json, benchmark, benchmark.core.encoders.ssl as ssl; from importlib import metadata; "
                 "print(json.dumps([benchmark.__file__, str(ssl.WEIGHTS), ssl.WEIGHTS.is_file(), "
                 "str(metadata.distribution('platebench').locate_file(''))]))"], cwd=tmp_path, env=env)
    package, weights, weights_found, dist = json.loads(where.stdout)
    assert Path(package).is_relative_to(venv) and Path(dist).is_relative_to(venv)  # not the repository's copy
    assert Path(weights).is_relative_to(venv) and weights_found

    listing = run([bench, "methods", "list"], cwd=tmp_path, env=env)
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert BUILTIN_METHODS <= set(rows) and {rows[m][2] for m in BUILTIN_METHODS} == {"platebench"}
    assert "warning" not in listing.stderr
    datasets = run([bench, "data", "info", "--json"], cwd=tmp_path, env=env)
    assert {"synthetic", "jump"} <= {d["name"] for d in json.loads(datasets.stdout)}

    run([bench, "run", "-m", "erm", "-s", "source_out", "--folds", "0", "--quick", "--set", "crop=0", "-q",
         "--dataset", str(toy_dataset.root), "--device", "cpu", "--results", str(tmp_path / "res")],
        cwd=tmp_path, env=env)
    (record,) = (tmp_path / "res").rglob("fold0_seed0.quick.json")
    data = json.loads(record.read_text())
    assert data["status"] == "ok" and data["method"]["name"] == "erm"
    assert data["environment"]["git_commit"] == "unknown"  # installed, not a checkout: no commit to claim
