"""Entry-point plugins: an installed package's methods register, show their origin; broken ones are skipped."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import _plugin_site
import pytest
from typer.testing import CliRunner

from benchmark import plugins, registry
from benchmark.cli import app
from benchmark.errors import UnknownNameError

EXAMPLE = Path(__file__).parent / "fixtures" / "example_plugin"
runner = CliRunner()


@pytest.fixture
def clean_registry(monkeypatch):
    """Restore the registry, the plugin problems and sys.path/sys.modules after the test."""
    registry.available_methods()  # built-ins and installed plugins loaded before the snapshot
    methods, origins, problems = dict(registry._METHODS), dict(registry._ORIGINS), list(plugins._problems)
    modules = set(sys.modules)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    registry._METHODS.clear(), registry._METHODS.update(methods)
    registry._ORIGINS.clear(), registry._ORIGINS.update(origins)
    plugins._problems[:] = problems
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def install(site: Path, package: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Make ``package`` look installed in folder ``site``, declaring method entry points."""
    _plugin_site.install(site, package, {plugins.METHODS_GROUP: entry_points}, modules)


def reload_plugins() -> list[plugins.PluginProblem]:
    return registry.load_plugins(plugins.entry_points())


def test_the_example_plugin_registers_through_its_declared_entry_point(tmp_path, clean_registry):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][plugins.GROUP]
    install(tmp_path / "site", project["name"], declared,
            {"platebench_example_plugin": (EXAMPLE / "platebench_example_plugin.py").read_text()})
    assert reload_plugins() == []
    assert registry.get_method("example_dmso_centroid").access == "controls"
    assert registry.method_origin("example_dmso_centroid") == "platebench-example-plugin"
    result = runner.invoke(app, ["methods", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("example_dmso_centroid"))
    assert row.split()[1:3] == ["controls", "platebench-example-plugin"]
    assert next(line for line in result.output.splitlines() if line.startswith("erm ")).split()[2] == "platebench"


GOOD = '''
from benchmark.methods.base import AccessLevel, Method
from benchmark.registry import register_method

@register_method
class Good(Method):
    name = "plugin_good"
    access = AccessLevel.NONE
    description = "a plugin that works"
    def fit(self, train, val, seed): return self
    def adapt(self, plate): return self
    def predict(self, images):
        import numpy as np
        return np.full((len(images), 8), 1 / 8)
'''


def test_broken_plugins_are_reported_with_their_package_and_skipped(tmp_path, clean_registry):
    site = tmp_path / "site"
    install(site, "pb-good", {"good": "pb_good"}, {"pb_good": GOOD})
    install(site, "pb-import-error", {"x": "pb_import_error"}, {"pb_import_error": "import not_a_module_xyz\n"})
    install(site, "pb-duplicate", {"dup": "pb_duplicate"},
            {"pb_duplicate": GOOD.replace('"plugin_good"', '"erm"').replace("class Good", "class Dup")})
    install(site, "pb-signature", {"sig": "pb_signature"},
            {"pb_signature": GOOD.replace('"plugin_good"', '"plugin_sig"').replace(
                "def fit(self, train, val, seed)", "def fit(self, train)")})
    install(site, "pb-not-a-method", {"obj": "pb_not_a_method:VALUE"}, {"pb_not_a_method": "VALUE = 3\n"})
    problems = {p.package: p.reason for p in reload_plugins()}
    assert problems["pb-import-error"] == "ModuleNotFoundError: No module named 'not_a_module_xyz'"
    assert "method name 'erm' is registered twice: by benchmark.methods.erm.ERM and by pb_duplicate.Dup" \
        in problems["pb-duplicate"]
    assert "fit(self, train) does not accept the call fit(self, train, val, seed)" in problems["pb-signature"]
    assert "not a module or a Method subclass" in problems["pb-not-a-method"]
    assert "pb-good" not in problems
    methods = registry.available_methods()
    assert registry.method_origin("plugin_good") == "pb-good" and "plugin_sig" not in methods
    assert methods["erm"].__module__ == "benchmark.methods.erm"  # the built-in survives the duplicate
    result = runner.invoke(app, ["methods", "list"])
    assert result.exit_code == 0
    assert "warning: plugin package 'pb-import-error' (entry point 'x = pb_import_error'): ModuleNotFoundError: " \
           "No module named 'not_a_module_xyz'; skipped" in result.output
    assert "plugin_good" in result.output and "erm" in result.output


def test_an_unknown_method_name_mentions_the_plugins_that_failed(tmp_path, clean_registry):
    install(tmp_path / "site", "pb-broken", {"x": "pb_broken"}, {"pb_broken": "raise RuntimeError('oops')\n"})
    reload_plugins()
    with pytest.raises(UnknownNameError, match=r"unknown method 'brokn'.*plugin package 'pb-broken' "
                                               r"\(entry point 'x = pb_broken'\): RuntimeError: oops; skipped"):
        registry.get_method("brokn")


def test_a_plugin_that_registers_nothing_is_reported(tmp_path, clean_registry):
    install(tmp_path / "site", "pb-empty", {"x": "pb_empty"}, {"pb_empty": "X = 1\n"})
    (problem,) = reload_plugins()
    assert "registers no method" in problem.reason and problem.package == "pb-empty"


def test_builtins_are_marked_platebench():
    assert {registry.method_origin(n) for n in ("erm", "adabn", "ben", "fm_tvn")} == {"platebench"}
