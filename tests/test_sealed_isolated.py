"""Untrusted code never runs in the evaluator: plugins are listed from metadata and imported only in a sandbox.

The plugin here writes a marker (with its process id) and patches ``benchmark.protocol.evaluation`` when imported.
``bench methods list``, ``bench leaderboard`` and ``bench report`` must not import it; ``get_method``
refuses it; :func:`method_info` describes it through ``run_isolated``. Unless said otherwise the tests
use a stand-in for :func:`benchmark.sealed.isolated.run_isolated` that runs the target in a forked child of the
test's process (no sandbox, no fresh interpreter to import torch again): what matters here is which process
imports the plugin. The last tests run the real sandbox (fresh interpreters) end to end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import sys
import time
import types
from pathlib import Path

import _plugin_site
import pytest
from typer.testing import CliRunner

import benchmark.protocol.evaluation
from benchmark import plugins, registry
from benchmark.cli import app
from benchmark.errors import BenchError, UnknownNameError
from benchmark.method_info import MethodInfo, MethodInfoError, describe_class, method_info
from benchmark.methods.base import AccessLevel

runner = CliRunner()
PLUGIN = "plugin_evil"
PACKAGE = "pb-evil"

EVIL = '''
import dataclasses
import os

import benchmark.protocol.evaluation as _evaluation
from benchmark.methods.base import AccessLevel, Method, MethodConfig
from benchmark.registry import register_method

if {marker!r}:  # (a sealed worker would stop the run for this write: the end-to-end tests leave it out)
    with open({marker!r}, "a") as _f:
        _f.write(f"{{os.getpid()}}\\n")
_real = _evaluation.score


def _perfect(predictions, plate_seconds=None):
    return {{**_real(predictions, plate_seconds), "patched": True}}


_evaluation.score = _perfect
_evaluation.PATCHED_BY_PLUGIN = True


@dataclasses.dataclass(frozen=True)
class EvilConfig(MethodConfig):
    temperature: float = 1.0


@register_method
class Evil(Method):
    name = {name!r}
    access = AccessLevel.CONTROLS
    description = "writes a marker and patches the evaluator when imported"
    Config = EvilConfig
    min_controls = 4
    quick_overrides = {{"temperature": 0.5}}

    def fit(self, train, val, seed):
        return self

    def adapt(self, plate):
        return self

    def predict(self, images):
        import numpy as np
        return np.full((len(images), 8), 1 / 8)
'''


def forked_isolated(target: str, payload: dict, *, time_limit_s: float = 600.0,
                    memory_limit_gb: float | None = None, readable=()) -> dict:
    """Stand-in for ``run_isolated``: ``target`` in a forked child of this process, JSON in and out (what the
    child imports or patches stays in the child)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answers on the pipe and exits, never returning to pytest
        try:
            os.close(read)
            try:
                module, name = target.split(":")
                answer = {"ok": getattr(importlib.import_module(module), name)(json.loads(json.dumps(payload)))}
            except BaseException as exc:  # noqa: BLE001 - the parent raises it
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            with os.fdopen(write, "w") as out:
                out.write(json.dumps(answer))
        finally:
            os._exit(0)
    os.close(write)
    chunks, deadline = [], time.monotonic() + time_limit_s
    with os.fdopen(read, "rb") as pipe:
        while select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = pipe.read1(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if not chunks:
        raise BenchError(f"isolated {target} failed: no answer within {time_limit_s} s")
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise BenchError(f"isolated {target} failed: {answer['error']}")
    return answer["ok"]


@pytest.fixture
def isolated(monkeypatch):
    """``benchmark.sealed.isolated.run_isolated`` replaced by :func:`forked_isolated`; the calls it got."""
    calls = []

    def run(target, payload, **kwargs):
        calls.append((target, payload))
        return forked_isolated(target, payload, **kwargs)

    name = "benchmark.sealed.isolated"
    if importlib.util.find_spec(name) is not None:
        monkeypatch.setattr(importlib.import_module(name), "run_isolated", run)
    else:  # the sandbox module is not written yet: a module holding the stand-in
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(run_isolated=run))
    return calls


@pytest.fixture
def restored(tmp_path_factory, monkeypatch):
    """sys.path, the registry, the evaluator's ``score`` and sys.modules restored after the test."""
    registry.available_methods()
    methods, origins, modules = dict(registry._METHODS), dict(registry._ORIGINS), set(sys.modules)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(benchmark.protocol.evaluation, "score", benchmark.protocol.evaluation.score)  # undone if a test imports one
    yield
    vars(benchmark.protocol.evaluation).pop("PATCHED_BY_PLUGIN", None)
    registry._METHODS.clear(), registry._METHODS.update(methods)
    registry._ORIGINS.clear(), registry._ORIGINS.update(origins)
    temporary = str(tmp_path_factory.getbasetemp())
    for name in set(sys.modules) - modules:  # the plugins' modules only (not, e.g., torch's C extensions)
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(temporary):
            del sys.modules[name]


@pytest.fixture
def site(restored, tmp_path):
    """A folder of fake installed distributions on sys.path (see ``restored``)."""
    return tmp_path / "site"


def install(site: Path, package: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    _plugin_site.install(site, package, {plugins.METHODS_GROUP: entry_points}, modules)
    if "Summary" not in (site / f"{package.replace('-', '_')}-0.1.0.dist-info" / "METADATA").read_text():
        meta = site / f"{package.replace('-', '_')}-0.1.0.dist-info" / "METADATA"
        meta.write_text(meta.read_text() + f"Summary: the {package} methods\n")


@pytest.fixture
def evil(site, tmp_path):
    """The evil plugin installed as distribution pb-evil (entry point plugin_evil = pb_evil); its marker file."""
    marker = tmp_path / "imported.txt"
    install(site, PACKAGE, {PLUGIN: "pb_evil"}, {"pb_evil": EVIL.format(marker=str(marker), name=PLUGIN)})
    return marker


def imported_here(marker: Path) -> bool:
    """Whether this process imported the plugin (its marker names this pid, its module is loaded, or it patched)."""
    pids = marker.read_text().split() if marker.exists() else []
    return (str(os.getpid()) in pids or "pb_evil" in sys.modules
            or hasattr(benchmark.protocol.evaluation, "PATCHED_BY_PLUGIN") or benchmark.protocol.evaluation.score.__name__ != "score")


def test_methods_list_shows_a_plugin_from_metadata_without_importing_it(evil):
    result = runner.invoke(app, ["methods", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith(PLUGIN))
    assert row.split()[1:3] == ["?", PACKAGE] and row.endswith(f"the {PACKAGE} methods")
    assert "`bench methods list --describe` asks a sandboxed worker" in result.output
    assert next(line for line in result.output.splitlines() if line.startswith("erm ")).split()[1:3] == \
        ["none", "platebench"]
    assert not evil.exists() and not imported_here(evil)


def test_methods_list_describe_asks_a_worker(evil, isolated):
    result = runner.invoke(app, ["methods", "list", "--describe"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith(PLUGIN))
    assert row.split()[1:3] == ["controls", PACKAGE] and row.endswith("patches the evaluator when imported")
    assert [t for t, _ in isolated] == ["benchmark.method_info:describe_named"]  # the built-ins: in process
    assert evil.exists() and not imported_here(evil)  # imported by the worker only


def test_get_method_refuses_a_plugin_in_the_evaluator(evil):
    with pytest.raises(registry.PluginSealedError, match=f"method '{PLUGIN}' comes from the plugin package "
                                                         f"'{PACKAGE}': its code runs only inside a sealed worker"):
        registry.get_method(PLUGIN)
    assert PLUGIN not in registry.available_methods()
    entry = registry.method_entries()[PLUGIN]
    assert (entry.kind, entry.origin, entry.target) == ("plugin", PACKAGE, "pb_evil")
    assert registry.method_origin(PLUGIN) == PACKAGE and PLUGIN in registry.method_names()
    with pytest.raises(UnknownNameError, match="unknown method 'plugin_evl'.*Did you mean 'plugin_evil'"):
        registry.get_method("plugin_evl")
    assert not imported_here(evil)


def test_method_info_describes_a_plugin_through_the_sandbox(evil, isolated):
    info = method_info(PLUGIN, {"temperature": "2"})
    assert (info.access, info.min_controls, info.origin, info.kind) == (AccessLevel.CONTROLS, 4, PACKAGE, "plugin")
    assert info.config == {"temperature": 2.0} and info.quick_overrides == {"temperature": 0.5}
    assert (info.module, info.qualname, info.builtin, info.plugin) == ("pb_evil", "Evil", False, True)
    assert method_info(PLUGIN, quick=True).config == {"temperature": 0.5}
    with pytest.raises(BenchError, match="unknown hyper-parameter"):
        method_info(PLUGIN, {"nope": "1"})
    assert {t for t, _ in isolated} == {"benchmark.method_info:describe_named"}
    assert evil.exists() and not imported_here(evil)


def test_builtins_are_described_in_process_without_a_sandbox(isolated):
    info = method_info("erm", quick=True)
    assert (info.kind, info.origin, info.module, info.qualname) == ("builtin", "platebench", "benchmark.methods.erm",
                                                                    "ERM")
    assert info.config["max_epochs"] == 1 and info.starts_from == "benchmark.methods.erm.ERMConfig"
    assert isolated == []


def test_the_sandboxed_side_imports_only_the_named_plugin(evil, site):
    install(site, "pb-other", {"plugin_other": "pb_other"}, {"pb_other": "raise RuntimeError('never imported')\n"})
    cls = registry.get_method(PLUGIN, import_plugins=True)  # what a sealed worker does
    assert cls.name == PLUGIN and registry.method_origin(PLUGIN) == PACKAGE
    assert "pb_other" not in sys.modules
    with pytest.raises(registry.PluginError, match="plugin package 'pb-other' .*RuntimeError: never imported"):
        registry.load_plugin_method("plugin_other")
    assert "plugin_other" not in registry.available_methods()


NAMED = '''
from benchmark.methods.base import AccessLevel, Method
from benchmark.registry import register_method


@register_method
class Named(Method):
    name = "right_name"
    access = AccessLevel.NONE
    description = "registered under another name than its entry point's"

    def fit(self, train, val, seed):
        return self

    def adapt(self, plate):
        return self

    def predict(self, images):
        return images
'''


@pytest.mark.parametrize("value", ["pb_named:Named", "pb_named"])
def test_an_entry_point_named_otherwise_than_its_method_is_a_clear_error(site, value):
    install(site, "pb-named", {"wrong_name": value}, {"pb_named": NAMED})
    with pytest.raises(registry.PluginError) as caught:
        registry.load_plugin_method("wrong_name")
    message = str(caught.value)
    assert message.startswith("plugin package 'pb-named' (entry point 'wrong_name = " + value + "'): ")
    assert "a plugin's entry point name must be its method's name" in message
    assert f'declare `right_name = "{value}"`' in message
    assert "right_name" not in registry.available_methods()  # rolled back


def test_entry_points_that_take_a_taken_name_are_skipped_from_metadata(site):
    install(site, "pb-erm", {"erm": "pb_erm"}, {"pb_erm": "raise RuntimeError('never imported')\n"})
    install(site, "pb-a", {"twice": "pb_a"}, {"pb_a": "X = 1\n"})
    install(site, "pb-b", {"twice": "pb_b"}, {"pb_b": "X = 1\n"})
    problems = {p.package: p.reason for p in registry.plugin_problems()}
    assert problems == {"pb-erm": "the name 'erm' is taken by the built-in method benchmark.methods.erm.ERM; rename "
                                  "the entry point and the method",
                        "pb-b": "the name 'twice' is declared by the plugin package 'pb-a' too; rename one"}
    assert registry.method_entries()["erm"].kind == "builtin" and registry.method_origin("twice") == "pb-a"
    result = runner.invoke(app, ["methods", "list"])
    assert result.exit_code == 0
    assert "warning: plugin package 'pb-erm' (entry point 'erm = pb_erm'): the name 'erm' is taken" in result.output
    assert not {"pb_erm", "pb_a", "pb_b"} & set(sys.modules)


def test_leaderboard_counts_a_plugin_as_installed_without_importing_it(evil, tmp_path, monkeypatch):
    import benchmark.leaderboard.build as leaderboard
    from test_leaderboard_build import fake

    seen = []
    screen = leaderboard.screen_records
    monkeypatch.setattr(leaderboard, "screen_records", lambda records, installed: seen.append(installed) or
                        screen(records, installed))
    root = tmp_path / "results"
    fake(root, "erm", "source_out", 0, 0, 0.6, 0.9)
    fake(root, PLUGIN, "source_out", 0, 0, 0.7, 0.9, access="controls")
    out = tmp_path / "board" / "LEADERBOARD.md"
    runner.invoke(app, ["leaderboard", "--results", str(root), "--out", str(out), "--no-figures"])
    (installed,) = seen
    assert installed[PLUGIN] == PACKAGE and installed["erm"] == "platebench"
    assert not imported_here(evil)


def test_report_of_a_plugin_record_never_imports_it(evil, tmp_path):
    from test_report_build import predictions, write_fake

    path = write_fake(tmp_path / "res", PLUGIN, 0, 0, predictions())
    result = runner.invoke(app, ["report", "--record", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"note: method '{PLUGIN}' comes from the plugin '{PACKAGE}', whose code runs only in a sealed worker" \
        in result.output
    assert not imported_here(evil)


@pytest.fixture(scope="module")
def quiet_site(tmp_path_factory) -> Path:
    """The evil plugin without its marker (it only patches the evaluator when imported), installed once: the
    tests that run it sealed share its folder, so one zygote (which binds that folder) serves them all."""
    site, path = tmp_path_factory.mktemp("quiet") / "site", list(sys.path)
    install(site, PACKAGE, {PLUGIN: "pb_evil"}, {"pb_evil": EVIL.format(marker="", name=PLUGIN)})
    sys.path[:] = path  # each test puts it on sys.path (quiet_evil)
    return site


@pytest.fixture
def quiet_evil(restored, quiet_site):
    """``quiet_site`` first on sys.path for this test; a marker path never written."""
    sys.path.insert(0, str(quiet_site))
    importlib.invalidate_caches()
    return quiet_site / "no-marker"


def test_a_plugin_runs_in_its_sealed_worker_and_never_in_the_evaluator(quiet_evil, isolated, toy_dataset, tmp_path):
    from benchmark.protocol.loop import run_protocol
    from benchmark.records import read_record

    (outcome,) = run_protocol(PLUGIN, "source_out", toy_dataset, seeds=[0], folds=[0], device="cpu",
                              results_dir=tmp_path / "res", scenarios="none")
    assert outcome.status == "ok", outcome.error
    record = read_record(outcome.path)
    assert record["method"]["access"] == "controls" and record["method"]["origin"] == PACKAGE
    assert record["method"]["config"] == {"temperature": 1.0} and "patched" not in record["metrics"]
    assert record["metrics"]["out_of_domain"]["accuracy"] < 0.5  # uniform probabilities: no perfect score
    assert record["metrics"]["out_of_domain"]["balanced_accuracy"] == pytest.approx(1 / 8)  # its uniform guesses
    assert [t for t, _ in isolated] == ["benchmark.method_info:describe_named"]
    assert not imported_here(quiet_evil)


def test_the_sandbox_answer_of_the_checks_is_checked():
    from benchmark.conformance.checks import parse_isolated_checks

    ok = {"check": "fit", "status": "passed", "message": "fitted", "seconds": 0.1}
    results, local = parse_isolated_checks({"results": [ok], "local": [[0.125] * 8]}, ["declaration", "fit"])
    assert [(r.check, r.status) for r in results] == [("declaration", "failed"), ("fit", "passed")]
    assert results[0].message == "no result from the sandboxed process" and local.shape == (1, 8)
    for bad, why in [({"results": "all passed"}, "not an object with a list of results"),
                     ({"results": [{**ok, "status": "great"}]}, "a result is malformed"),
                     ({"results": [{**ok, "check": "sealed"}]}, "a result is malformed"),
                     ({"results": [ok], "local": [[0.5] * 7]}, "not a finite \\(n, 8\\) table"),
                     ({"results": [ok], "local": "x"}, "not a table of numbers")]:
        with pytest.raises(BenchError, match=why):
            parse_isolated_checks(bad, ["declaration", "fit"])


# ----------------------------------------------------------------------------- MethodInfo.from_json

def described(**changes) -> dict:
    from _toy_methods import Centroid

    return {**describe_class(Centroid), **changes}


@pytest.mark.parametrize("changes, message", [
    ({"access": "everything"}, "access must be one of none, controls, unlabeled, transductive, got 'everything'"),
    ({"access": 3}, "access must be one of"),
    ({"description": "x" * 1001}, "description must be a string of at most 1000 characters, got str of length 1001"),
    ({"description": None}, "description must be a string"),
    ({"config": [1, 2]}, "config must be a JSON object, got list"),
    ({"config": {"lr": float("nan")}}, "config holds a number that is not finite"),
    ({"quick_overrides": {"x": {"deep": object()}}}, "quick_overrides holds a object, not a JSON value"),
    ({"config": {"x": "y" * 200_000}}, "config is larger than 100000 characters as JSON"),
    ({"name": "erm"}, "its class is named 'erm', not '_test_centroid'"),
    ({"min_controls": -1}, "min_controls must be an integer in [0, 1000000], got -1"),
    ({"min_controls": True}, "min_controls must be an integer"),
    ({"min_controls": 10**7}, "min_controls must be an integer"),
    ({"deterministic": "yes"}, "deterministic must be true or false"),
    ({"module": ""}, "module must be a non-empty string"),
    ({"starts_from": 5}, "starts_from must be null or a string"),
    ({"secret": 1}, "unexpected secret"),
])
def test_from_json_refuses_malformed_descriptions(changes, message):
    with pytest.raises(MethodInfoError, match="the description of method '_test_centroid' \\(pb-x\\) is malformed: "
                       ".*" + message.replace("[", "\\[").replace("]", "\\]").replace("(", "\\(").replace(")", "\\)")):
        MethodInfo.from_json(described(**changes), name="_test_centroid", origin="pb-x", kind="plugin")


def test_from_json_refuses_a_missing_field_a_non_object_and_a_plugin_posing_as_platebench():
    d = described()
    del d["access"]
    with pytest.raises(MethodInfoError, match="malformed: missing access"):
        MethodInfo.from_json(d, name="_test_centroid", origin="pb-x", kind="plugin")
    with pytest.raises(MethodInfoError, match="expected a JSON object, got list"):
        MethodInfo.from_json([], name="_test_centroid", origin="pb-x", kind="plugin")
    posing = described(module="benchmark.methods.erm")
    with pytest.raises(MethodInfoError, match="a plugin's class claims the module benchmark.methods.erm"):
        MethodInfo.from_json(posing, name="_test_centroid", origin="pb-x", kind="plugin")
    info = MethodInfo.from_json(described(), name="_test_centroid", origin="_toy_methods", kind="local")
    assert (info.access, info.kind, info.builtin, info.plugin) == (AccessLevel.NONE, "local", False, False)
    assert info.to_json() == {**described(), "origin": "_toy_methods", "kind": "local"}


def test_a_worker_answer_of_another_shape_fails_method_info(evil, monkeypatch):
    def lying(target, payload, **kwargs):
        return {**forked_isolated(target, payload), "access": "root"}

    monkeypatch.setitem(sys.modules, "benchmark.sealed.isolated", types.SimpleNamespace(run_isolated=lying))
    with pytest.raises(MethodInfoError, match=f"the description of method '{PLUGIN}' \\({PACKAGE}\\) is malformed: "
                                              "access must be one of"):
        method_info(PLUGIN)


# ----------------------------------------------------------------------------- the real sandbox, when present

@pytest.mark.skipif(importlib.util.find_spec("benchmark.sealed.isolated") is None,
                    reason="benchmark.sealed.isolated is not written yet")
def test_the_real_sandbox_stops_a_plugin_writing_outside_its_scratch_folder(evil, site, monkeypatch):
    from benchmark.sealed.isolated import IsolatedFailure

    monkeypatch.setenv("PYTHONPATH", str(site))
    with pytest.raises(IsolatedFailure, match="benchmark.method_info:describe_named failed in an isolated interpreter"):
        method_info(PLUGIN)
    assert not evil.exists() and not imported_here(evil)


@pytest.mark.skipif(importlib.util.find_spec("benchmark.sealed.isolated") is None,
                    reason="benchmark.sealed.isolated is not written yet")
def test_methods_check_of_a_plugin_through_the_real_sandbox(quiet_evil, quiet_site, monkeypatch):
    """Described and checked in sandboxed interpreters; ``sealed`` run by the evaluator; never imported here."""
    from benchmark.conformance.checks import CHECKS, EVALUATOR_CHECKS
    from benchmark.sealed import isolated

    calls, real = [], isolated.run_isolated

    def recorded(target, payload, **kwargs):
        calls.append(target)
        return real(target, payload, **kwargs)

    monkeypatch.setattr(isolated, "run_isolated", recorded)
    monkeypatch.setenv("PYTHONPATH", str(quiet_site))
    result = runner.invoke(app, ["methods", "check", PLUGIN])
    assert result.exit_code == 0, result.output
    assert f"checking '{PLUGIN}' (access controls, from {PACKAGE})" in result.output  # described in the sandbox
    for name in CHECKS:
        assert f"PASS  {name}" in result.output, result.output
    assert f"{len(CHECKS)} passed, 0 failed" in result.output and "predictions the same as in process" in result.output
    assert calls == ["benchmark.method_info:describe_named", "benchmark.conformance.checks:run_checks_isolated"]
    assert EVALUATOR_CHECKS == ("sealed",)
    assert not imported_here(quiet_evil)
