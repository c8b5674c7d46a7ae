"""The package's import graph has no cycle, counting every import statement wherever it stands.

Module-level, function-level and ``TYPE_CHECKING`` imports all count, absolute
(``import benchmark.x``, ``from benchmark.x import y``) and relative (``from . import x``,
``from .x import y``, ``from .. import x``). Not counted: the implicit import of a parent
package when a submodule is imported (a package's ``__init__`` may import its own
submodules), and discovery by name (``importlib.import_module`` over the built-in
methods, entry points), which is how registries find their members.

The graph also keeps its layers (every import counts here too): ``benchmark.core`` imports
no method and no harness package; inside core, ``training``, ``recipe``, ``cells``, ``encoders``,
``profiles`` import only packages before them in that list; ``benchmark.datasets`` imports no
harness package (``benchmark.slurm`` and the loose shared modules are allowed).
"""

from __future__ import annotations

import ast
from pathlib import Path

from _layout import ROOT, source_files


def modules() -> dict[str, Path]:
    """Every module of the package by import name (``benchmark.methods.erm`` for ``methods/erm.py``)."""
    found = {}
    for installed, file in source_files().items():
        if installed.endswith(".py"):
            parts = installed[: -len(".py")].split("/")
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def imports(name: str, file: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import statement in ``file``."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names if alias.name in known]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    out.append((sub, node.lineno))
                elif target in known:
                    out.append((target, node.lineno))
    return [(t, line) for t, line in out if t != name]


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


HARNESS = ("protocol", "leaderboard", "report", "conformance", "sweep", "scenarios", "sealed", "cli", "calibration",
           "gpu_check")
"""The harness packages: what runs, scores, reports and checks methods."""
ABOVE_CORE = ("methods", "protocol", "leaderboard", "report", "conformance", "sweep", "slurm", "sealed", "scenarios",
              "cli", "calibration")
"""What ``benchmark.core`` never imports: the methods built from it and the harness that runs them."""
CORE_ORDER = ("training", "recipe", "cells", "encoders", "profiles")
"""The packages of ``benchmark.core``, bottom first: each imports only those before it."""
FORBIDDEN = {
    "benchmark.core": tuple(f"benchmark.{p}" for p in ABOVE_CORE),
    "benchmark.datasets": tuple(f"benchmark.{p}" for p in HARNESS),
    **{f"benchmark.core.{low}": tuple(f"benchmark.core.{high}" for high in CORE_ORDER[i + 1:])
       for i, low in enumerate(CORE_ORDER)},
}
"""Package -> the packages that no module in it may import."""


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def graph_of(known: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the package: line of its first import statement}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in known}
    for name, file in known.items():
        for target, line in imports(name, file, known):
            graph[name].setdefault(target, line)
    return graph


def layer_violations(graph: dict[str, dict[str, int]], known: dict[str, Path],
                     forbidden: dict[str, tuple[str, ...]]) -> list[str]:
    """One line per import that crosses a layer the wrong way: where it stands and what it imports."""
    found = []
    for name in sorted(graph):
        for package, banned in forbidden.items():
            if not within(name, package):
                continue
            for target, line in sorted(graph[name].items(), key=lambda item: item[1]):
                if any(within(target, b) for b in banned):
                    found.append(f"{name} ({known[name].relative_to(ROOT)}:{line}) imports {target}, "
                                 f"which {package} must not import")
    return found


def test_the_module_list_covers_the_three_parts():
    names = modules()
    assert {"benchmark.registry", "benchmark.plugins", "benchmark.core.encoders.loading", "benchmark.methods.erm",
            "benchmark.datasets.registry", "benchmark.datasets.synthetic.loader"} <= set(names)
    assert not any(n.startswith(("methods", "datasets")) for n in names)


def test_finding_a_cycle():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_the_import_graph_is_acyclic():
    known = modules()
    graph = graph_of(known)
    assert sum(map(len, graph.values())) > 100  # the parser sees the package's imports
    assert graph["benchmark.core.encoders.loading"].keys() >= {"benchmark.core.encoders.backends",
                                                       "benchmark.core.encoders.ssl"}  # function-level ones too
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} ({known[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"



def test_finding_a_layer_violation():
    known = {n: ROOT / f"{n.replace('.', '/')}.py" for n in ("benchmark.core.training.loop",
                                                               "benchmark.core.profiles.tvn", "benchmark.methods.erm")}
    graph = {"benchmark.core.training.loop": {"benchmark.core.profiles.tvn": 7, "benchmark.methods.erm": 3},
             "benchmark.core.profiles.tvn": {"benchmark.core.training.loop": 2}, "benchmark.methods.erm": {}}
    assert layer_violations(graph, known, FORBIDDEN) == [
        "benchmark.core.training.loop (benchmark/core/training/loop.py:3) imports benchmark.methods.erm, "
        "which benchmark.core must not import",
        "benchmark.core.training.loop (benchmark/core/training/loop.py:7) imports benchmark.core.profiles.tvn, "
        "which benchmark.core.training must not import"]


def test_the_layers_hold():
    """Nothing in core imports a method or the harness; core's packages import only down; data imports no harness."""
    known = modules()
    assert {n.split(".")[2] for n in known if within(n, "benchmark.core") and n.count(".") >= 2} == set(CORE_ORDER)
    assert all(any(within(n, f"benchmark.{p}") for n in known) for p in {*HARNESS, *ABOVE_CORE})  # none renamed
    violations = layer_violations(graph_of(known), known, FORBIDDEN)
    assert not violations, f"{len(violations)} import(s) against the layers:\n" + "\n".join(violations)
