"""The ``sealed`` conformance check: ``bench methods check`` fails a cheater, naming what it tried."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

import _cheaters  # noqa: F401  (registers the _cheat_ methods, as a plugin would: origin _cheaters)
from _check_env import check_cache  # noqa: F401  (autouse fixture)
from benchmark.cli import app
from benchmark.conformance import check_data, iter_checks
from benchmark.registry import method_origin

runner = CliRunner()


@pytest.fixture
def cheat_root(monkeypatch):
    root = check_data().dataset.root
    monkeypatch.setenv(_cheaters.ROOT_ENV, str(root))
    return os.path.realpath(root)


@pytest.mark.parametrize("name, message", [
    ("_cheat_open", "fit: the sealed worker stopped the run: the method tried to open {root}/index.parquet (the full "
                    "dataset index, which holds target labels)"),
    ("_cheat_subprocess", "the method tried to start a process (subprocess.Popen: cat {root}/index.parquet)"),
    ("_cheat_gc", "the method tried to walk every object of the process (gc.get_objects)"),
    ("_cheat_offsets", "in a sealed worker: adapt on plate lab3_b1_p1 raised AttributeError: ArrayImages has no "
                       "attribute '_offsets'"),
    ("_cheat_private_dataset", "predictions in a sealed worker differ by up to 0.875 from the same fit in process: it "
                               "read the private attribute(s) LabelledImages._dataset, PackedStore._map, which lead to the "
                               "whole dataset in process"),
])
def test_bench_methods_check_fails_a_cheater_naming_the_path(cheat_root, name, message):
    assert method_origin(name) == "_cheaters"
    result = runner.invoke(app, ["methods", "check", name])
    assert result.exit_code == 1, result.output
    line = next(line for line in result.output.splitlines() if "sealed " in line and "FAIL" in line)
    assert message.format(root=cheat_root) in line, line
    assert f"error: '{name}' fails" in result.output


def test_an_honest_method_passes_the_sealed_check_with_its_numbers():
    result = {r.check: r for r in iter_checks("_test_ctrl_std", check_data())}["sealed"]
    assert result.status == "passed", result.message
    assert "ran in a sealed worker (start-up" in result.message and "nothing refused" in result.message
    assert result.message.endswith("predictions the same as in process")


def test_the_private_read_watch_sees_only_code_outside_platebench():
    from benchmark.private_reads import watching

    train = check_data().train
    with watching() as seen:
        train.treated_ids()  # platebench's own methods read private attributes freely
        assert seen == []
        getattr(train, "_dataset")
        getattr(train, "_dataset")
    assert seen == ["LabelledImages._dataset"]
    getattr(train, "_dataset")  # outside the watch: nothing is patched any more
    assert "__getattribute__" not in type(train).__dict__
