"""The ``sealed`` conformance check: ``bench methods check`` fails a cheater, naming what it tried."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

import _cheaters
from _check_env import check_cache  # noqa: F401  (autouse fixture)
from benchmark.cli import app
from benchmark.conformance.checks import check_data, iter_checks
from benchmark.registry import method_origin

pytestmark = pytest.mark.usefixtures("toy_methods", "cheaters")
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
    from benchmark.conformance.private_reads import watching

    train = check_data().train
    with watching() as seen:
        train.treated_ids()  # platebench's own methods read private attributes freely
        assert seen == []
        getattr(train, "_dataset")
        getattr(train, "_dataset")
    assert seen == ["LabelledImages._dataset"]
    getattr(train, "_dataset")  # outside the watch: nothing is patched any more
    assert "__getattribute__" not in type(train).__dict__


def test_canaries_are_planted_where_a_cheater_looks_and_removed(tmp_path):
    from benchmark.conformance import canaries

    data = check_data()
    planted = canaries.plant(data.dataset, data.fold.target_ids, [tmp_path / "a", tmp_path / "b"])
    assert [c.shift for c in planted] == [1, 2]
    index = planted[1].root / "index.parquet"
    import polars as pl

    false = pl.read_parquet(index)
    rows = data.dataset.index
    target = set(data.fold.target_ids.tolist())
    for row_true, row_false in zip(rows.iter_rows(named=True), false.iter_rows(named=True)):
        shifted = row_true["image_id"] in target and not row_true["is_control"]
        assert row_false["label"] == ((row_true["label"] + 2) % 8 if shifted else row_true["label"])
    assert list((planted[0].root / "results").rglob("*.predictions.parquet"))
    canaries.remove(planted)
    assert not any(c.root.exists() for c in planted)


def test_predictions_that_follow_a_canary_are_named_and_others_not():
    import polars as pl

    from benchmark.conformance import canaries

    labels = pl.Series("label", [i % 8 for i in range(64)], dtype=pl.Int8)
    planted = [canaries.Canary(1, __import__("pathlib").Path("/x/one")), canaries.Canary(3, __import__(
        "pathlib").Path("/x/three"))]
    follows = canaries.followed(pl.DataFrame({"label": labels, "predicted": (labels + 3) % 8}), planted)
    assert follows is not None and follows[0].shift == 3 and follows[1] == 1.0 and follows[2] == 0.0
    assert canaries.followed(pl.DataFrame({"label": labels, "predicted": labels}), planted) is None
    assert canaries.followed(pl.DataFrame({"label": labels, "predicted": labels * 0}), planted) is None


def test_a_native_reader_without_a_sandbox_is_caught_by_a_canary(monkeypatch, tmp_path):
    """With the audit hook alone a native reader wins (docs/sealed.md); the canary in the temporary folder names it."""
    import tempfile

    from benchmark.conformance import canaries

    monkeypatch.setenv("PLATEBENCH_SANDBOX", "audit")
    monkeypatch.setattr(check_data(), "_runs", None)  # sealed runs made afresh, with the audit hook alone
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(_cheaters.ROOT_ENV, str(tmp_path / canaries.FOLDER))  # the cheater looks in the temp folder
    result = {r.check: r for r in iter_checks("_cheat_native", check_data())}["sealed"]
    assert result.status == "failed", result.message
    assert f"follow the false labels planted at {tmp_path / canaries.FOLDER}" in result.message
