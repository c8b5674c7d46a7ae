"""Shared fixtures: a small hand-built dataset for tests of the machinery.

``toy_dataset`` is deliberately simple and fast (not the simulator): 4 sources x 3
batches x 2 plates, the real control layout, 1 site per well, 16x16 pixels. Its
class signal is a per-class spatial pattern; each source multiplies channels by a
gain and adds an offset, so BN adaptation has something to undo.

The test-only methods (``tests/_toy_methods.py``, ``_cheaters.py``, ``_cheaters_sandbox.py``)
are registered only for the test modules that ask for them (fixtures ``toy_methods``,
``cheaters``, ``sandbox_cheaters``): importing their modules registers nothing, so what the
registry holds never depends on which test modules were imported first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmark.constants import DMSO_ID, DMSO_LABEL, POSCONS, dmso_wells
from benchmark.datasets.dataset import open_dataset, write_dataset
from benchmark.datasets.store import write_shard
from benchmark.registry import registered


def make_toy_dataset(root: Path, n_sources: int = 4, n_batches: int = 3, n_plates: int = 2,
                     sites: int = 1, size: int = 16, seed: int = 0, shift: float = 1.0):
    """Write a toy dataset to ``root`` and return it opened."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 1, size=(len(POSCONS), 5, size, size))
    rows, shards = [], []
    wells = [(w, p[0], p[2]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL, DMSO_ID) for w in dmso_wells()]
    for s in range(n_sources):
        gain = 1 + shift * rng.uniform(-0.4, 0.4, size=5)
        offset = shift * rng.uniform(-20, 20, size=5)
        for b in range(n_batches):
            for p in range(n_plates):
                plate = f"src{s}_b{b}_p{p}"
                images = []
                for well, label, compound in wells:
                    for site in range(1, sites + 1):
                        base = rng.normal(0, 1, size=(5, size, size))
                        if label >= 0:
                            base += 1.2 * patterns[label]
                        img = 100 + 25 * base
                        img = img * gain[:, None, None] + offset[:, None, None]
                        images.append(np.clip(img, 0, 255).astype(np.uint8))
                        rows.append(dict(source=f"src{s}", batch=f"src{s}_b{b}", plate=plate, well=well,
                                         site=site, compound=compound, label=label,
                                         is_control=label == DMSO_LABEL, shard=len(shards),
                                         offset=len(images) - 1))
                shards.append(write_shard(root, plate, np.stack(images)))
    index = pl.DataFrame(rows).with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64))
    write_dataset(root, "toy", "test", {"seed": seed, "size": size, "shift": shift}, index, shards)
    return open_dataset(root)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def prepare_app():
    """A typer app with ``bench data``'s ``prepare`` command alone (the JUMP preparation tests)."""
    import typer

    from benchmark.cli.prepare import attach_prepare

    data_app = typer.Typer()

    @data_app.callback()
    def main() -> None:
        """data"""

    attach_prepare(data_app)
    return data_app


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail at once when importing a test module registered a method (then the registry would depend on the order)."""
    from benchmark import registry

    local = sorted(f"{name} ({cls.__module__})" for name, cls in registry._METHODS.items()
                   if registry.kind_of(cls) == "local")
    if local:
        raise pytest.UsageError(f"registered when imported: {', '.join(local)}; register test methods for the tests "
                                "that use them (benchmark.registry.registered in a fixture, tests/conftest.py)")


@pytest.fixture(scope="module")
def toy_methods():
    """The ``_test_*`` methods of tests/_toy_methods.py, registered while the requesting module's tests run."""
    from _toy_methods import TOY_METHODS

    with registered(*TOY_METHODS):
        yield TOY_METHODS


@pytest.fixture
def toy_methods_in_workers(toy_methods, monkeypatch):
    """``toy_methods``, also in the processes this test starts that find a method by importing its module (a
    sweep's workers, benchmark/sweep/unit.py): there importing ``_toy_methods`` registers them."""
    from _toy_methods import REGISTER_ENV

    monkeypatch.setenv(REGISTER_ENV, "1")
    return toy_methods


@pytest.fixture(scope="module")
def cheaters():
    """The ``_cheat_*`` methods of tests/_cheaters.py, registered while the requesting module's tests run."""
    from _cheaters import CHEAT_METHODS

    with registered(*CHEAT_METHODS):
        yield CHEAT_METHODS


@pytest.fixture(scope="module")
def sandbox_cheaters():
    """The ``_cheat23_*`` methods of tests/_cheaters_sandbox.py, registered while the requesting module's tests run."""
    from _cheaters_sandbox import CHEAT23_METHODS

    with registered(*CHEAT23_METHODS):
        yield CHEAT23_METHODS


_quitting: list = []
"""Sealed zygotes of finished tests, asked to quit and reaped at the session's end."""


def _quit(zygote) -> None:
    """Ask a zygote to quit without waiting for it to exit."""
    zygote.ask_to_quit()
    _quitting.append(zygote)


@pytest.fixture(autouse=True)
def _stop_the_tests_own_zygotes(request):
    """After a test, ask the sealed zygotes that read a folder under its ``tmp_path`` (its own cache or plugin) to
    quit: no later test can use them, and each would hold ~1 GB until the session ends."""
    yield
    import os
    import sys

    runs, tmp = sys.modules.get("benchmark.sealed.runs"), request.node.funcargs.get("tmp_path")
    if runs is None or tmp is None:
        return
    own = os.path.realpath(tmp)
    for key, zygote in list(runs._ZYGOTES.items()):  # noqa: SLF001 - (kind, readable folders, network)
        if any(folder == own or folder.startswith(own + os.sep) for folder in key[1]):
            del runs._ZYGOTES[key]  # noqa: SLF001
            _quit(zygote)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop every zygote left (all told at once, so they exit side by side), then reap the finished tests' ones."""
    import sys

    runs = sys.modules.get("benchmark.sealed.runs")
    if runs is not None:
        runs.stop_zygotes()
    while _quitting:
        _quitting.pop().stop()
