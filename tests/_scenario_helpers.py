"""Shared pieces of the scenario tests (tests/test_scenarios_*.py).

- :class:`OwnScenario`: the plumbing of an experiment's own scenario object (one level, never plain, never
  unchanged); a test subclass says only which cases a level hands the method.
- :func:`tiny_synthetic`: the smallest simulated dataset (4 plates, 32 px) in a cache folder of its own, with
  ``$PLATEBENCH_CACHE`` pointing there while the context lives (its severity twins go there too); the fixture
  :func:`small_synthetic` (imported by a test module) is it in one cache folder per session.
- :class:`CountingHost`, :func:`fitted_host`: a :class:`LocalHost` that counts and logs every ``adapt`` and
  ``predict`` call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from benchmark.protocol.evaluation import LocalHost
from benchmark.scenarios.base import PlateCase

TINY = {"size": "tiny", "batches_per_source": 1, "plates_per_batch": 1}
"""The tiny simulator's settings: 4 sources x 1 batch x 1 plate, 2 sites per well, 32 px."""


class OwnScenario:
    """An experiment's own scenario with one level ``level``; subclasses implement :meth:`cases`."""

    name, level, description = "own", "own", "an experiment's own scenario"

    @property
    def levels(self) -> tuple[str, ...]:
        return (self.level,)

    def not_applicable(self, dataset):
        return None

    def plain_level(self, dataset):
        return None

    def unchanged_for(self, access):
        return False

    def describe_level(self, level):
        return self.description

    def cases(self, dataset, level, plate, treated_ids, control_ids) -> list[PlateCase]:
        raise NotImplementedError


@contextmanager
def tiny_synthetic(cache: Path) -> Iterator:
    """The tiny simulated dataset generated into (or found in) ``cache``, with ``$PLATEBENCH_CACHE`` = ``cache``
    until the context ends."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PLATEBENCH_CACHE", str(cache))
    try:
        from benchmark.datasets.synthetic import load_synthetic

        yield load_synthetic(**TINY, progress=False)
    finally:
        mp.undo()


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder per test session for the tiny simulator and its twins (each module's fixture finds what an
    earlier one generated)."""
    return tmp_path_factory.getbasetemp() / "tiny-synthetic-cache"


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    """The tiny simulated dataset (:func:`tiny_synthetic`) in the session's shared cache (import it into a test
    module to use it there)."""
    with tiny_synthetic(shared_cache(tmp_path_factory)) as dataset:
        yield dataset


class CountingHost(LocalHost):
    """A :class:`LocalHost` that counts its adapt/predict calls (``calls``, which a test may reset) and logs each
    ``adapt`` as ``("adapt", plate, n treated, n controls)`` and each ``predict`` as ``("predict", plate, n images)``."""

    calls = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list[tuple] = []
        adapt, predict = self.method.adapt, self.method.predict

        def logged_adapt(view):
            self.log.append(("adapt", view.plate, len(view.treated), len(view.controls)))
            return adapt(view)

        def logged_predict(images):
            self.log.append(("predict", self._plate, len(np.asarray(images))))
            return predict(images)

        self.method.adapt, self.method.predict = logged_adapt, logged_predict
        self._plate: str | None = None

    def adapt_predict(self, full):
        self.calls += 1
        self._plate = full.plate
        return super().adapt_predict(full)


def fitted_host(method, dataset, fold) -> CountingHost:
    """A :class:`CountingHost` of ``method`` fitted on ``fold``'s training and validation images (seed 0)."""
    train = dataset.labelled(dataset.index[fold.train_ids])
    method.fit(train, dataset.labelled(dataset.index[fold.val_ids]), 0)
    return CountingHost(method, dataset, fold, fitted=True)
