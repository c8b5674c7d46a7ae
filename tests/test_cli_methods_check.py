"""``bench methods check`` and ``bench methods new``: the report, its exit code, and a skeleton that passes once filled in."""

from __future__ import annotations

import importlib
import sys

import pytest
from typer.testing import CliRunner

from _check_env import check_cache  # noqa: F401  (autouse fixture)
from _toy_methods import Centroid
from benchmark import registry
from benchmark.cli import app
from benchmark.conformance.checks import CHECKS

runner = CliRunner()


@pytest.fixture
def temporary(request):
    """Register test-only method classes for one test."""
    added = []

    def register(cls):
        registry.register_method(cls)
        added.append(cls.name)
        return cls
    yield register
    for name in added:
        registry.unregister_method(name)


def test_check_passes_a_builtin_and_lists_every_check():
    result = runner.invoke(app, ["methods", "check", "fm_tvn"])
    assert result.exit_code == 0, result.output
    for name in CHECKS:
        assert f"PASS  {name}" in result.output
    assert f"{len(CHECKS)} passed, 0 failed, 0 skipped" in result.output


def test_a_method_raising_in_predict_gets_one_line_per_check_and_exit_code_1(temporary):
    @temporary
    class Explodes(Centroid):
        name = "_check_explodes"

        def predict(self, images):
            raise ZeroDivisionError("division by zero in my_layer")

    result = runner.invoke(app, ["methods", "check", "_check_explodes"])
    assert result.exit_code == 1
    assert "FAIL  probabilities            predict on plate lab3_b1_p1 raised ZeroDivisionError: division by zero " \
           "in my_layer" in result.output
    assert "Traceback" not in result.output
    assert "error: '_check_explodes' fails" in result.output and "rerun `bench methods check _check_explodes`" \
        in result.output


def test_check_unknown_name_and_bad_override():
    result = runner.invoke(app, ["methods", "check", "ermm"])
    assert result.exit_code == 1 and "unknown method 'ermm'" in result.output and "Did you mean 'erm'?" in result.output
    result = runner.invoke(app, ["methods", "check", "erm", "--set", "nope=1"])
    assert result.exit_code == 1 and "unknown hyper-parameter(s) nope for ERMConfig" in result.output


FILLED = {
    'raise NotImplementedError("fill in {name}.fit")': '''features, labels = [], []
        for plate in train.plates:
            ids = train.treated_ids(plate)
            x = train.read(ids).astype(np.float64).mean(axis=(2, 3))
            ref = train.read(train.control_ids(plate)).astype(np.float64).mean(axis=(2, 3))
            features.append((x - ref.mean(axis=0)) / (ref.std(axis=0) + 1e-6))
            labels.append(train.labels(ids))
        x, y = np.concatenate(features), np.concatenate(labels)
        self.centroids_ = np.stack([x[y == k].mean(axis=0) for k in range(8)])
        return self''',
    'raise NotImplementedError("fill in {name}.adapt")': '''ref = np.asarray(plate.controls[:], dtype=np.float64).mean(axis=(2, 3))
        self.ref_ = (ref.mean(axis=0), ref.std(axis=0) + 1e-6)
        return self''',
    'raise NotImplementedError("fill in {name}.predict")': '''x = (np.asarray(images, dtype=np.float64).mean(axis=(2, 3)) - self.ref_[0]) / self.ref_[1]
        z = -((x[:, None] - self.centroids_[None]) ** 2).sum(axis=2) / self.config.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)''',
}


def test_new_writes_a_skeleton_that_passes_check_once_filled_in(tmp_path, monkeypatch):
    name = "skeleton_demo"
    result = runner.invoke(app, ["methods", "new", name, "--dir", str(tmp_path), "--plugin"])
    assert result.exit_code == 0, result.output
    method_file = tmp_path / f"{name}.py"
    assert {p.name for p in tmp_path.iterdir()} == {f"{name}.py", f"test_{name}.py", "pyproject.toml"}
    assert f'{name} = "{name}"' in (tmp_path / "pyproject.toml").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module(name)  # the unfilled skeleton registers and fails check at fit
        result = runner.invoke(app, ["methods", "check", name])
        assert result.exit_code == 1
        assert f"FAIL  fit                      fit raised NotImplementedError: fill in {name}.fit" in result.output
        registry.unregister_method(name)
        del sys.modules[name]
        text = method_file.read_text()
        for placeholder, code in FILLED.items():
            text = text.replace(placeholder.format(name=name), code)
        text = text.replace("access = AccessLevel.NONE", "access = AccessLevel.CONTROLS")
        method_file.write_text(text)
        importlib.invalidate_caches()
        importlib.import_module(name)
        result = runner.invoke(app, ["methods", "check", name])
        assert result.exit_code == 0, result.output
        assert f"{len(CHECKS)} passed, 0 failed" in result.output
    finally:
        registry.unregister_method(name)
        sys.modules.pop(name, None)


def test_new_refuses_bad_names_and_existing_files(tmp_path):
    result = runner.invoke(app, ["methods", "new", "My-Method", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "'My-Method' cannot be a method name" in result.output
    assert runner.invoke(app, ["methods", "new", "dup", "--dir", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["methods", "new", "dup", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "dup.py" in result.output and "already exist" in result.output


def test_new_into_the_built_in_methods_folder_puts_the_test_into_tests(tmp_path, monkeypatch):
    from benchmark.cli import methods as cli_methods

    methods_dir = tmp_path / "checkout" / "methods"
    methods_dir.mkdir(parents=True)
    monkeypatch.setattr(cli_methods, "_builtin_methods_dir", lambda: methods_dir.resolve())
    result = runner.invoke(app, ["methods", "new", "my_builtin", "--dir", str(methods_dir)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in methods_dir.iterdir()) == ["my_builtin.py"]  # no test module among the methods
    assert (tmp_path / "checkout" / "tests" / "test_my_builtin.py").is_file()
    result = runner.invoke(app, ["methods", "new", "other", "--dir", str(methods_dir), "--plugin"])
    assert result.exit_code == 1 and "--plugin writes a separate package" in result.output
    help_words = set(runner.invoke(app, ["methods", "new", "--help"]).output.split())
    assert {"`methods`", "tests/;", "--plugin,"} <= help_words
