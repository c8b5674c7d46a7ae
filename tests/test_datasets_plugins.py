"""Dataset plugins (entry-point group ``platebench.datasets``): an installed package's dataset is listed with
its origin, opens by name and runs through ``bench run``; broken plugins are reported and skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import _plugin_site
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import benchmark.datasets as datasets
from benchmark import plugins
from benchmark.cli import app
from benchmark.constants import DMSO_LABEL, POSCONS, dmso_wells
from benchmark.datasets import registry
from benchmark.errors import UnknownNameError
from benchmark.records import load_records

EXAMPLE = Path(__file__).parent / "fixtures" / "example_dataset_plugin"
runner = CliRunner()


@pytest.fixture
def clean_datasets(monkeypatch):
    """Restore the dataset registry, the plugin problems and sys.path/sys.modules after the test."""
    datasets.available_datasets()  # built-ins and installed plugins loaded before the snapshot
    entries, problems, modules = dict(registry._DATASETS), list(plugins._problems), set(sys.modules)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    registry._DATASETS.clear(), registry._DATASETS.update(entries)
    plugins._problems[:] = problems
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def install(site: Path, package: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    _plugin_site.install(site, package, {plugins.DATASETS_GROUP: entry_points}, modules)


def reload_plugins() -> list[plugins.PluginProblem]:
    return registry.load_plugins(plugins.entry_points(plugins.DATASETS_GROUP))


def write_raw_screen(raw: Path, size: int = 16) -> None:
    """The lab's export: 3 sources x 2 batches x 1 plate, one 5-channel TIFF per well (the JUMP layout)."""
    rng = np.random.default_rng(0)
    patterns = rng.normal(0, 1, (len(POSCONS), 5, size, size))
    wells = [(w, p[0]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL) for w in dmso_wells()]
    for s in range(3):
        for b in range(2):
            folder = raw / f"lab{s}" / f"lab{s}_b{b}" / f"lab{s}_b{b}_p0"
            folder.mkdir(parents=True)
            for well, label in wells + [("A05", DMSO_LABEL)]:  # A05: a library compound, not in the layout
                pixels = 100 + 25 * rng.normal(0, 1, (5, size, size)) + (30 * patterns[label] if label >= 0 else 0)
                tifffile.imwrite(folder / f"{well}_s1.tif", np.clip(pixels + 10 * s, 0, 255).astype(np.uint8))


def test_a_dataset_plugin_is_listed_prepared_opened_and_run(tmp_path, clean_datasets, monkeypatch, toy_methods):
    monkeypatch.setenv("PLATEBENCH_CACHE", str(tmp_path / "cache"))
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    install(tmp_path / "site", project["name"], project["entry-points"][plugins.DATASETS_GROUP],
            {"platebench_example_screen": (EXAMPLE / "platebench_example_screen.py").read_text()})
    assert reload_plugins() == []

    listing = runner.invoke(app, ["data", "info"])
    assert listing.exit_code == 0, listing.output
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in listing.stdout.splitlines()[1:-1]}
    assert rows["example_screen"] == ["platebench-example-screen",
                                      "The example lab's own screen (TIFFs in the JUMP plate layout), prepared by "
                                      "this plugin."]
    assert rows["synthetic"][0] == rows["jump"][0] == "platebench"
    as_json = json.loads(runner.invoke(app, ["data", "info", "--json"]).stdout)
    assert {d["name"]: d["origin"] for d in as_json}["example_screen"] == "platebench-example-screen"

    unprepared = runner.invoke(app, ["data", "info", "example_screen"])
    assert unprepared.exit_code == 1 and unprepared.stderr.count("\n") == 1
    assert "example_screen is not prepared in" in unprepared.stderr and "python -m platebench_example_screen" \
        in unprepared.stderr

    write_raw_screen(tmp_path / "raw")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}  # as CONTRIBUTING.md prepares it
    prepared = subprocess.run([sys.executable, "-m", "platebench_example_screen", str(tmp_path / "raw")], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert prepared.returncode == 0, prepared.stderr
    assert prepared.stdout.strip() == f"wrote {tmp_path / 'cache' / 'example_screen'}"
    info = runner.invoke(app, ["data", "info", "example_screen", "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.stdout)
    assert summary["name"] == "example_screen" and summary["n_sources"] == 3 and summary["n_plates"] == 6
    assert summary["n_treated"] == 6 * 32 and summary["n_controls"] == 6 * 32  # A05 is left out

    run = runner.invoke(app, ["run", "-m", "_test_centroid", "-s", "source_out", "--dataset", "example_screen",
                              "--folds", "0", "--quick", "--device", "cpu", "--results", str(tmp_path / "res"), "-q"])
    assert run.exit_code == 0, run.output
    (record,) = load_records(tmp_path / "res").quick
    assert record.dataset == "example_screen" and record.fingerprint == summary["fingerprint"]
    assert record.data["dataset"]["argument"] == "example_screen"


LOADER = '''
from benchmark.datasets import open_dataset

def load_tiny(root="/nowhere"):
    """A tiny screen, registered through its entry point alone."""
    return open_dataset(root)
'''


def test_broken_dataset_plugins_are_reported_with_their_package_and_skipped(tmp_path, clean_datasets):
    site = tmp_path / "site"
    install(site, "pb-loader", {"tiny_screen": "pb_loader:load_tiny"}, {"pb_loader": LOADER})
    install(site, "pb-import-error", {"x": "pb_ds_import_error"}, {"pb_ds_import_error": "import not_a_module_q\n"})
    install(site, "pb-duplicate", {"dup": "pb_ds_duplicate"},
            {"pb_ds_duplicate": "from benchmark.datasets import register_dataset\n\n"
                                "@register_dataset('synthetic')\ndef load_mine():\n    '''Mine.'''\n"})
    install(site, "pb-not-a-loader", {"obj": "pb_ds_value:VALUE"}, {"pb_ds_value": "VALUE = 3\n"})
    install(site, "pb-nothing", {"x": "pb_ds_nothing"}, {"pb_ds_nothing": "X = 1\n"})
    problems = {p.package: p.reason for p in reload_plugins()}
    assert problems["pb-import-error"] == "ModuleNotFoundError: No module named 'not_a_module_q'"
    assert ("dataset name 'synthetic' is registered twice: by benchmark.datasets.synthetic.loader.load_synthetic "
            "(platebench) and by pb_ds_duplicate.load_mine (pb-duplicate); rename one") in problems["pb-duplicate"]
    assert "not a module or a loader function" in problems["pb-not-a-loader"]
    assert "registers no dataset" in problems["pb-nothing"]
    assert "pb-loader" not in problems
    entries = datasets.available_datasets()
    assert entries["tiny_screen"].origin == "pb-loader"
    assert entries["tiny_screen"].description == "A tiny screen, registered through its entry point alone."
    assert entries["synthetic"].loader.__module__ == "benchmark.datasets.synthetic.loader"  # the built-in survives
    listing = runner.invoke(app, ["data", "info"])
    assert listing.exit_code == 0 and "tiny_screen" in listing.stdout and "synthetic" in listing.stdout
    assert ("warning: plugin package 'pb-import-error' (entry point 'x = pb_ds_import_error'): "
            "ModuleNotFoundError: No module named 'not_a_module_q'; skipped") in listing.stderr
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'tiny_scren'.*Did you mean 'tiny_screen'.*"
                                               r"4 dataset plugin\(s\) failed to load"):
        datasets.load_dataset("tiny_scren")
    # method plugins are listed apart: `bench methods list` does not warn about dataset plugins
    assert "pb-import-error" not in runner.invoke(app, ["methods", "list"]).stderr


def test_contributing_shows_the_tested_example_file():
    guide = (Path(__file__).parents[1] / "CONTRIBUTING.md").read_text()
    section3 = guide[guide.index("## 3. Adding a dataset"):]
    shown = section3.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown == (EXAMPLE / "platebench_example_screen.py").read_text()
    declared = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    assert f'example_screen = "{declared[plugins.DATASETS_GROUP]["example_screen"]}"' in section3


def test_a_dataset_plugin_is_imported_only_when_its_dataset_is_asked_for(tmp_path, clean_datasets, toy_dataset,
                                                                          monkeypatch):
    """A method's package may declare a dataset entry point too: opening a built-in dataset or a folder must not
    run its code in the evaluator (docs/sealed.md)."""
    marker = tmp_path / "imported"
    code = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
            "from benchmark.datasets import open_dataset, register_dataset\n"
            f"@register_dataset('sneaky_ds', 'a dataset that runs code on import')\n"
            f"def load(**options):\n    return open_dataset(pathlib.Path({str(toy_dataset.root)!r}))\n")
    install(tmp_path / "site", "pb-sneaky", {"sneaky_ds": "pb_sneaky_ds"}, {"pb_sneaky_ds": code})
    monkeypatch.setattr(datasets, "_plugins_loaded", False)  # as in a fresh `bench run`
    assert datasets.load_dataset(str(toy_dataset.root)).fingerprint == toy_dataset.fingerprint
    assert not marker.exists()
    assert datasets.load_dataset("sneaky_ds").fingerprint == toy_dataset.fingerprint  # asked for: imported
    assert marker.exists()
