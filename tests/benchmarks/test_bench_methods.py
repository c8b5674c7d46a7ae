"""Every registered method: a real (short) fit with the loader's wait measured, then adapt + predict of one plate.

The fit uses the method's ``--quick`` settings on 16 plates of the 64 px dataset
(validation: 4 other plates); its report gives the share of step time spent waiting
for data (ResNet methods). The plate is what the evaluator hands over: 128 treated
images and 96 DMSO images of the last 4 plates (pooled into one view), as lazily read
arrays. A transductive method gets that plate in ``fit`` already (``train.targets``), as the
protocol hands it the target plates it is then scored on. The smoke run fits on 2 images of
each class and 8 DMSO images of 1 plate (validation: 1 plate likewise) and scores 16 treated +
16 DMSO images of the other two.
"""

from __future__ import annotations

import pytest

from benchmark.protocol.loop import resolve_config
from benchmark.registry import available_methods
from benchmark.throughput import matmul_fraction, matmul_gflops, training_flops_per_image

from ._bench_data import plates_of, pooled_plate, subset

METHODS = sorted(available_methods())
FITTED: dict = {}
"""Methods fitted by :func:`test_fit`, reused by :func:`test_adapt_predict`."""
PLATES = {False: (16, 4), True: (1, 1)}
"""Training and validation plates of a fit, timed (False) and in the smoke run (True); the plate scored is pooled
from the plates after them."""
PER_LABEL = {False: None, True: 2}
"""Images of each class per plate a fit gets (None: all; DMSO: 4 times as many), timed and in the smoke run."""
SCORED = {False: (128, 96), True: (16, 16)}
"""Treated and DMSO images of the plate scored, timed and in the smoke run."""


def _plate(datasets, smoke):
    """The plate ``adapt`` + ``predict`` is timed on (and a transductive fit's target)."""
    dataset = datasets[64]
    return pooled_plate(dataset, plates_of(dataset)[sum(PLATES[smoke]):], *SCORED[smoke])


def _fit(name, datasets, smoke):
    cls = available_methods()[name]
    if cls.needs_gpu:
        pytest.skip(f"{name} needs a GPU")
    dataset = datasets[64]
    plates = plates_of(dataset)
    n_train, n_val = PLATES[smoke]
    targets = [_plate(datasets, smoke)] if cls.access.sees_targets_in_fit else []
    method = cls(resolve_config(cls, quick=True), device="cpu")
    per_label = PER_LABEL[smoke]
    method.fit(subset(dataset, plates[:n_train], targets, per_label),
               subset(dataset, plates[n_train:n_train + n_val], per_label=per_label), seed=0)
    return method


@pytest.mark.parametrize("name", METHODS)
def test_fit(benchmark, datasets, smoke, name):
    """A quick-profile fit; records the data-loader wait as a fraction of step time."""
    method = benchmark.pedantic(lambda: _fit(name, datasets, smoke), rounds=1, warmup_rounds=0)
    FITTED[name] = method
    report = method.fit_report()
    benchmark.group = "fit (quick profile, 16 plates of 64 px)"
    benchmark.extra_info.update(kind="fit", method=name, data_wait_fraction=report.get("data_wait_fraction"),
                                images_per_second=report.get("images_per_second"),
                                epochs=report.get("epochs_run"), **_arithmetic(method, report, smoke))


def _arithmetic(method, report, smoke: bool) -> dict:
    """A ResNet method's training FLOPs per image, this process's matmul rate and the fit's share of it (the smoke
    times a small matmul: ~1.7 s per method for the 1024² one, and its figures mean nothing there)."""
    if not report.get("images_per_second") or "crop" not in report:
        return {}
    flops = training_flops_per_image(method.model_, 5, report["crop"])
    gflops = matmul_gflops(n=128, repeats=2) if smoke else matmul_gflops()
    fraction = matmul_fraction(report["images_per_second"], flops, gflops)
    assert fraction > 0 and (smoke or fraction < 1.5), \
        f"{method.name}: a fit at {fraction:.0%} of the matmul rate is a counting error"
    return dict(gflop_per_image=flops / 1e9, matmul_gflops=gflops, matmul_fraction=fraction)


@pytest.mark.parametrize("name", METHODS)
def test_adapt_predict(benchmark, datasets, smoke, name):
    """``adapt(plate)`` + ``predict(plate.treated)`` for a plate of 128 treated + 96 DMSO images."""
    method = FITTED.get(name) or _fit(name, datasets, smoke)
    plate = _plate(datasets, smoke)

    def adapt_predict():
        return method.adapt(plate).predict(plate.treated[:])

    probs = benchmark.pedantic(adapt_predict, rounds=5, warmup_rounds=1)
    assert probs.shape == (len(plate.treated), 8)
    benchmark.group = "adapt + predict, one plate (128 treated + 96 DMSO, 64 px)"
    benchmark.extra_info.update(kind="adapt_predict", method=name, n_images=len(plate.treated),
                                target_seconds=1.0, access=str(method.access))
