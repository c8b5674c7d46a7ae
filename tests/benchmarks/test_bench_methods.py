"""Every registered method: a real (short) fit with the loader's wait measured, then adapt + predict of one plate.

The fit uses the method's ``--quick`` settings on 16 plates of the 64 px dataset
(validation: 4 other plates); its report gives the share of step time spent waiting
for data (ResNet methods). The plate is what the evaluator hands over: 128 treated
images and 96 DMSO images, as lazily read arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.datasets.dataset import PlateView
from benchmark.protocol.loop import resolve_config
from benchmark.registry import available_methods

from ._bench_data import plates_of, subset

METHODS = sorted(available_methods())
FITTED: dict = {}
"""Methods fitted by :func:`test_fit`, reused by :func:`test_adapt_predict`."""


def _fit(name, datasets):
    cls = available_methods()[name]
    if cls.needs_gpu:
        pytest.skip(f"{name} needs a GPU")
    dataset = datasets[64]
    plates = plates_of(dataset)
    method = cls(resolve_config(cls, quick=True), device="cpu")
    method.fit(subset(dataset, plates[:16]), subset(dataset, plates[16:20]), seed=0)
    return method


@pytest.mark.parametrize("name", METHODS)
def test_fit(benchmark, datasets, name):
    """A quick-profile fit; records the data-loader wait as a fraction of step time."""
    method = benchmark.pedantic(lambda: _fit(name, datasets), rounds=1, warmup_rounds=0)
    FITTED[name] = method
    report = method.fit_report()
    benchmark.group = "fit (quick profile, 16 plates of 64 px)"
    benchmark.extra_info.update(kind="fit", method=name, data_wait_fraction=report.get("data_wait_fraction"),
                                images_per_second=report.get("images_per_second"),
                                epochs=report.get("epochs_run"))


@pytest.mark.parametrize("name", METHODS)
def test_adapt_predict(benchmark, datasets, name):
    """``adapt(plate)`` + ``predict(plate.treated)`` for a plate of 128 treated + 96 DMSO images."""
    method = FITTED.get(name) or _fit(name, datasets)
    dataset = datasets[64]
    treated = np.flatnonzero(~dataset.index["is_control"].to_numpy())[:128]
    controls = np.flatnonzero(dataset.index["is_control"].to_numpy())[:96]
    plate = PlateView("benchmark_plate", dataset.image_array(treated), dataset.image_array(controls))

    def adapt_predict():
        return method.adapt(plate).predict(plate.treated[:])

    probs = benchmark.pedantic(adapt_predict, rounds=5, warmup_rounds=1)
    assert probs.shape == (128, 8)
    benchmark.group = "adapt + predict, one plate (128 treated + 96 DMSO, 64 px)"
    benchmark.extra_info.update(kind="adapt_predict", method=name, n_images=128,
                                target_seconds=1.0, access=str(method.access))
