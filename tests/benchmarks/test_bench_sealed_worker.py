"""The cost of sealing a run: a worker's start-up and a plate's hand-over, against an in-process quick run.

The baseline, measured in the same session: one in-process ``--quick`` run of
``cs_arm_bn`` on fold 1 of ``source_out`` of the 64 px dataset (fit + 24 plates, after a
first run that pays the process's one-time costs). Each benchmark reports its cost as
``share_of_quick_run`` in ``extra_info``; the target is at most 0.05 for start-up and
hand-over together. The smoke run (untimed) makes one baseline run and reports no shares.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmark.datasets.dataset import PlateView
from benchmark.protocol.evaluation import LocalHost, fit_and_evaluate
from benchmark.method_info import info_of
from benchmark.protocol.loop import resolve_config
from benchmark.registry import get_method
from benchmark.sealed.runs import SealedRuns
from benchmark.splits import make_folds

METHOD = "cs_arm_bn"


def _fold(dataset):
    return make_folds(dataset.index, "source_out")[1]


@pytest.fixture(scope="module")
def baseline(datasets, smoke) -> dict:
    """Seconds of one in-process quick run (and its number of plates), the second of two (smoke: the only one)."""
    dataset = datasets[64]
    cls = get_method(METHOD)
    seconds = []
    for _ in range(1 if smoke else 2):
        start = time.perf_counter()
        result = fit_and_evaluate(cls(resolve_config(cls, quick=True)), dataset, _fold(dataset), 0)
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds[-1], "plates": len(result.metrics["per_plate"])}


@pytest.fixture(scope="module")
def runs(datasets, toy_methods) -> SealedRuns:
    """Sealed runs on the 64 px set; the toy methods registered first, so that the one zygote started here reads
    their module too and serves both benchmarks (a built-in's worker still reads only its own code)."""
    runs = SealedRuns(datasets[64], 0)
    runs.store(_fold(datasets[64]))
    return runs


def test_worker_start_up(benchmark, datasets, baseline, runs):
    """Start a sealed worker for a run and stop it (process, audit hook, method, sealed store)."""
    cls = get_method(METHOD)
    config = resolve_config(cls, quick=True)
    fold = _fold(datasets[64])

    def start_stop():
        host = runs.host(info_of(cls, config), fold)
        host.start()
        host.close()
        return host.worker_info()

    info = benchmark.pedantic(start_stop, rounds=5, warmup_rounds=1)
    assert info["start_s"] > 0
    benchmark.group = "sealed worker vs an in-process quick run"
    benchmark.extra_info.update(kind="worker_start", method=METHOD, baseline_s=round(baseline["seconds"], 3),
                                share_of_quick_run=(round(benchmark.stats.stats.mean / baseline["seconds"], 4)
                                                    if benchmark.stats else None))


def test_plate_hand_over(benchmark, datasets, baseline, runs, toy_methods):
    """adapt + predict of one plate through the worker, minus the same in process, times the run's plates."""
    dataset = datasets[64]
    cls = get_method("_test_centroid")
    config = resolve_config(cls, quick=True)
    fold = _fold(dataset)
    plate = dataset.index[fold.target_ids]["plate"][0]
    ids = dataset.index[fold.target_ids].filter(~dataset.index[fold.target_ids]["is_control"])
    ids = ids.filter(ids["plate"] == plate)["image_id"].to_numpy()
    view = dataset.plate_view(plate, ids, np.random.default_rng(0))[0]
    local = LocalHost(cls(config), dataset, fold)
    local.fit(0, [])
    start = time.perf_counter()
    for _ in range(5):
        local.adapt_predict(view)
    in_process = (time.perf_counter() - start) / 5
    with runs.host(info_of(cls, config), fold) as host:
        host.fit(0)
        benchmark.pedantic(lambda: host.adapt_predict(PlateView(view.plate, view.treated, view.controls)),
                           rounds=10, warmup_rounds=1)
    if not benchmark.stats:  # the smoke run: the hand-over worked, nothing was timed
        return
    extra = max(benchmark.stats.stats.mean - in_process, 0.0)
    benchmark.group = "sealed worker vs an in-process quick run"
    benchmark.extra_info.update(kind="plate_hand_over", method=cls.name, n_images=len(ids) + len(view.controls),
                                in_process_s=round(in_process, 5), extra_per_plate_s=round(extra, 5),
                                plates_per_run=baseline["plates"], baseline_s=round(baseline["seconds"], 3),
                                share_of_quick_run=round(extra * baseline["plates"] / baseline["seconds"], 4))
