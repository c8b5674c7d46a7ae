"""Bad input fails before any work, with one clear line, and loses nothing."""

import dataclasses

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.config_bounds import ConfigError, at_least, between, declared_bounds, positive
from benchmark.method_info import resolve_config
from benchmark.methods.base import MethodConfig
from benchmark.registry import get_method
from benchmark.results_folder import check_output_folder

runner = CliRunner()


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


def tree(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*"))


@pytest.fixture
def blocker(tmp_path):
    """A regular file where a results folder (or its parent) would go."""
    file = tmp_path / "notes.txt"
    file.write_text("keep me\n")
    return file


@pytest.mark.parametrize("below", ["", "runs", "runs/deeper"])
def test_run_with_results_under_a_file_fails_before_any_work(toy_methods, toy_dataset, tmp_path, blocker, below):
    results = blocker / below if below else blocker
    before = tree(tmp_path)
    r = bench("run", "-m", "_test_centroid", "-s", "source_out", "--dataset", toy_dataset.root, "--results", results,
              "--device", "cpu", "--folds", "0", "--seeds", "0,1")
    assert r.exit_code == 1
    what = "it is" if not below else f"its parent {blocker.as_posix()} is"
    assert r.stderr == (f"error: --results {results.as_posix()}: {what} a file, not a folder; give a folder path "
                        "(it is created if missing); nothing was run\n")
    assert r.stdout == ""  # no run started, no summary
    assert tree(tmp_path) == before and blocker.read_text() == "keep me\n"


def test_sweep_with_results_under_a_file_fails_before_any_work(toy_methods, toy_dataset, tmp_path, blocker):
    before = tree(tmp_path)
    r = bench("sweep", "--methods", "_test_centroid", "--splits", "source_out", "--folds", "0", "--seeds", "0",
              "--dataset", toy_dataset.root, "--results", blocker / "runs", "--executor", "debug")
    assert r.exit_code == 1
    assert r.stderr == (f"error: --results {(blocker / 'runs').as_posix()}: its parent {blocker.as_posix()} is a file, "
                        "not a folder; give a folder path (it is created if missing); nothing was run\n")
    assert tree(tmp_path) == before
    r = bench("sweep", "--methods", "_test_centroid", "--dataset", toy_dataset.root, "--results", tmp_path / "res",
              "--logs", blocker, "--executor", "debug")
    assert r.exit_code == 1 and r.stderr.startswith(f"error: --logs {blocker.as_posix()}: it is a file, not a folder")
    assert tree(tmp_path) == before


def test_an_existing_or_creatable_folder_passes(tmp_path):
    check_output_folder(tmp_path)
    check_output_folder(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_run_with_max_epochs_zero_fails_before_any_run_naming_the_field(toy_dataset, tmp_path):
    r = bench("run", "-m", "erm", "-s", "source_out", "--dataset", toy_dataset.root, "--results", tmp_path / "res",
              "--device", "cpu", "--folds", "0", "--seeds", "0", "--set", "max_epochs=0")
    assert r.exit_code == 1
    assert r.stderr == ("error: method 'erm': hyper-parameter max_epochs=0 is out of range: it must be >= 1 "
                        "(default 100)\n")
    assert not (tmp_path / "res").exists()
    shown = bench("run", "-m", "tent", "-s", "source_out", "--set", "tta_lr=0", "--show-config")
    assert shown.exit_code == 1
    assert shown.stderr == ("error: method 'tent': hyper-parameter tta_lr=0.0 is out of range: it must be > 0 "
                            "(default 0.001)\n")


def test_sweep_with_a_nonsensical_hyper_parameter_fails_before_any_unit(toy_dataset, tmp_path):
    r = bench("sweep", "--methods", "erm", "--splits", "source_out", "--folds", "0", "--seeds", "0",
              "--dataset", toy_dataset.root, "--results", tmp_path / "res", "--set", "max_epochs=0",
              "--executor", "debug")
    assert r.exit_code == 1
    assert "hyper-parameter max_epochs=0 is out of range: it must be >= 1" in r.stderr and "erm" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and not (tmp_path / "res").exists()


@pytest.mark.parametrize("method, field, value, valid", [
    ("erm", "max_epochs", "-1", ">= 1"),
    ("erm", "patience", "0", ">= 1"),
    ("erm", "batch_size", "0", ">= 1"),
    ("erm", "eval_batch_size", "0", ">= 1"),
    ("erm", "lr", "0", "> 0"),
    ("erm", "lr", "nan", "> 0"),
    ("erm", "lr", "inf", "> 0"),
    ("arm_bn", "n_treated", "0", ">= 1"),
    ("cs_arm_bn", "n_controls", "0", ">= 1"),
    ("dann", "domain_lr", "-0.1", "> 0"),
    ("roid", "source_momentum", "1.5", "in [0, 1]"),
    ("fm_tvn", "embed_batch_size", "0", ">= 1"),
])
def test_every_bound_names_method_field_value_and_range(method, field, value, valid):
    from benchmark.config_bounds import naming_method

    with pytest.raises(ConfigError) as caught, naming_method(method):
        resolve_config(get_method(method), {field: value})
    assert str(caught.value).startswith(f"method '{method}': hyper-parameter {field}=")
    assert f"out of range: it must be {valid}" in str(caught.value)


def test_every_built_in_default_quick_setting_and_preset_is_valid():
    from benchmark.registry import available_methods

    for name in available_methods():
        for quick in (False, True):
            for preset in (None, "paper"):
                resolve_config(get_method(name), quick=quick, preset=preset)


def test_bounds_are_declared_once_and_inherited():
    @dataclasses.dataclass(frozen=True)
    class Parent(MethodConfig):
        epochs: int = 3
        lr: float = 0.1
        bounds = {"epochs": at_least(1), "lr": positive()}

    @dataclasses.dataclass(frozen=True)
    class Child(Parent):
        momentum: float = 0.5
        bounds = {"momentum": between(0, 1)}

    assert set(declared_bounds(Child)) == {"epochs", "lr", "momentum"}
    Child()
    with pytest.raises(ConfigError, match=r"hyper-parameter epochs=0 is out of range: it must be >= 1 \(default 3\)"):
        Child.from_dict({"epochs": "0"})
    with pytest.raises(ConfigError, match=r"momentum=2\.0 is out of range: it must be in \[0, 1\]"):
        Child(momentum=2.0)
    with pytest.raises(ConfigError, match=r"lr=True is out of range"):  # a bool is no number
        Child(lr=True)
