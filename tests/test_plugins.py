"""Entry-point plugins: listed from metadata with their origin, imported one by one (as a sealed worker does);
broken ones fail alone with their package named. (That the evaluator never imports them: test_sealed_isolated.py.)"""

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
    registry.available_methods()  # built-ins loaded before the snapshot
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


def test_the_example_plugin_registers_through_its_declared_entry_point(tmp_path, clean_registry):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][plugins.GROUP]
    install(tmp_path / "site", project["name"], declared,
            {"platebench_example_plugin": (EXAMPLE / "platebench_example_plugin.py").read_text()})
    meta = tmp_path / "site" / "platebench_example_plugin-0.1.0.dist-info" / "METADATA"
    meta.write_text(meta.read_text() + f"Summary: {project['description']}\n")  # as pip writes it
    assert registry.plugin_problems() == []
    assert registry.method_origin("example_dmso_centroid") == "platebench-example-plugin"
    result = runner.invoke(app, ["methods", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("example_dmso_centroid"))
    assert row.split()[1:3] == ["?", "platebench-example-plugin"]  # listed from metadata, not imported
    assert row.endswith(project["description"])
    assert "platebench_example_plugin" not in sys.modules
    cls = registry.load_plugin_method("example_dmso_centroid")  # what a sealed worker does
    assert cls.access == "controls" and registry.method_origin("example_dmso_centroid") == "platebench-example-plugin"
    assert next(line for line in result.output.splitlines() if line.startswith("erm ")).split()[2] == "platebench"


GOOD = '''
from benchmark.methods.base import AccessLevel, Method
from benchmark.registry import register_method

@register_method
class Good(Method):
    name = "good"
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
            {"pb_duplicate": GOOD.replace('"good"', '"erm"').replace("class Good", "class Dup")})
    install(site, "pb-signature", {"sig": "pb_signature"},
            {"pb_signature": GOOD.replace('"good"', '"sig"').replace(
                "def fit(self, train, val, seed)", "def fit(self, train)")})
    install(site, "pb-not-a-method", {"obj": "pb_not_a_method:VALUE"}, {"pb_not_a_method": "VALUE = 3\n"})
    install(site, "pb-erm", {"erm": "pb_erm"}, {"pb_erm": "raise RuntimeError('never imported')\n"})
    result = runner.invoke(app, ["methods", "list"])  # from metadata: nothing is imported, nothing breaks
    assert result.exit_code == 0
    assert {"good", "x", "dup", "sig", "obj", "erm"} <= {line.split()[0] for line in result.output.splitlines()}

    def problem(name: str) -> str:
        with pytest.raises(registry.PluginError) as caught:
            registry.load_plugin_method(name)
        return str(caught.value)

    assert problem("x") == ("plugin package 'pb-import-error' (entry point 'x = pb_import_error'): "
                            "ModuleNotFoundError: No module named 'not_a_module_xyz'")
    assert "method name 'erm' is registered twice: by benchmark.methods.erm.ERM and by pb_duplicate.Dup" \
        in problem("dup")
    assert "fit(self, train) does not accept the call fit(self, train, val, seed)" in problem("sig")
    assert "not a module or a Method subclass" in problem("obj")
    assert registry.load_plugin_method("good").name == "good"
    methods = registry.available_methods()
    assert registry.method_origin("good") == "pb-good" and "sig" not in methods
    assert methods["erm"].__module__ == "benchmark.methods.erm"  # the built-in survives the duplicate


def test_an_unknown_method_name_mentions_the_plugins_that_failed(tmp_path, clean_registry):
    install(tmp_path / "site", "pb-broken", {"erm": "pb_broken"}, {"pb_broken": "raise RuntimeError('oops')\n"})
    with pytest.raises(UnknownNameError, match=r"unknown method 'brokn'.*plugin package 'pb-broken' "
                                               r"\(entry point 'erm = pb_broken'\): the name 'erm' is taken by the "
                                               r"built-in method benchmark.methods.erm.ERM.*; skipped"):
        registry.get_method("brokn")
    assert "pb_broken" not in sys.modules


def test_a_plugin_that_registers_nothing_is_reported(tmp_path, clean_registry):
    install(tmp_path / "site", "pb-empty", {"x": "pb_empty"}, {"pb_empty": "X = 1\n"})
    with pytest.raises(registry.PluginError, match="plugin package 'pb-empty' .*importing pb_empty registers no "
                                                   "method, none named 'x'"):
        registry.load_plugin_method("x")


def test_builtins_are_marked_platebench():
    assert {registry.method_origin(n) for n in ("erm", "adabn", "ben", "fm_tvn")} == {"platebench"}
